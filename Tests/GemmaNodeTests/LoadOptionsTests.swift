// Every command that loads a model gets its load options from one builder over the shared
// flags, so -c, -t and --quant mean the same in each (serve used to drop --quant).
import Foundation
import Testing
@testable import gemma_node

@Suite struct LoadOptionsTests {
    @Test func serveHonoursQuantAndItsOwnSizes() throws {
        let serve = try ServeCommand.parse(["-m", "/models/gemma-dir", "--quant", "q8_0", "-c", "128", "-t", "3",
                                            "--parallel", "2", "--batch-tokens", "64"])
        let o = serve.loadOptions
        #expect(o.quantize.map { "\($0)".lowercased() } == "q8_0")
        #expect(o.maxContext == 128)
        #expect(o.threads == 3)
        #expect(o.slots == 2)
        #expect(o.maxBatchTokens == 64)
    }

    @Test func generateChatAndLogitsUseTheSameBuilder() throws {
        let flags = ["-m", "/models/gemma-dir", "--quant", "q4_0", "-c", "256", "-t", "2"]
        let options = [
            try GenerateCommand.parse(flags + ["--tokens", "2,3"]).modelOptions.loadOptions(),
            try ChatCommand.parse(flags).modelOptions.loadOptions(),
            try LogitsCommand.parse(flags + ["--tokens", "2,3"]).modelOptions.loadOptions(),
        ]
        for o in options {
            #expect(o.quantize.map { "\($0)".lowercased() } == "q4_0")
            #expect(o.maxContext == 256)
            #expect(o.threads == 2)
            #expect(o.slots == 1)
            #expect(o.maxBatchTokens == 512)
        }
        let none = try ServeCommand.parse(["-m", "/models/m.gguf"]).loadOptions
        #expect(none.quantize == nil)
    }

    /// --kv-type reaches the load options of every model command; f16 when not given.
    @Test func kvTypeReachesEveryCommand() throws {
        for (flags, want) in [([String](), "f16"), (["--kv-type", "q8_0"], "q8_0"), (["--kv-type", "F32"], "f32")] {
            let base = ["-m", "/models/m.gguf"] + flags
            let options = [
                try GenerateCommand.parse(base + ["--tokens", "2,3"]).modelOptions.loadOptions(),
                try ChatCommand.parse(base).modelOptions.loadOptions(),
                try LogitsCommand.parse(base + ["--tokens", "2,3"]).modelOptions.loadOptions(),
                try ServeCommand.parse(base).loadOptions,
            ]
            for o in options { #expect(o.kvType.rawValue == want, "\(flags)") }
            #expect(try BenchCommand.parse(base).placement.resolvedKVType.rawValue == want)
            #expect(try InspectCommand.parse(base).kvTypeName.lowercased() == want)
        }
        #expect(throws: (any Error).self) { try GenerateCommand.parse(["--kv-type", "q4_0", "--tokens", "2"]) }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--kv-type", "bf16"]) }
        #expect(throws: (any Error).self) { try InspectCommand.parse(["--kv-type", "f8"]) }
    }

    /// bench reads --split, --weights-from-root and --kv-type through the same option group as
    /// the other model commands, so they mean the same there (its -c, -p and -n are its own).
    @Test func benchSharesThePlacementFlags() throws {
        let flags = ["-m", "/models/m.gguf", "--split", "3,1", "--weights-from-root", "--kv-type", "q8_0", "-t", "2"]
        let bench = try BenchCommand.parse(flags)
        let b = bench.placement.loadOptions(maxContext: 64, threads: bench.file.resolvedThreads)
        let g = try GenerateCommand.parse(flags + ["--tokens", "2,3"]).modelOptions.loadOptions()
        #expect(b.split == [3, 1] && g.split == [3, 1])
        #expect(b.weightsFromRoot && g.weightsFromRoot)
        #expect(b.kvType == .q8_0 && g.kvType == .q8_0)
        #expect(b.threads == 2 && g.threads == 2)
        #expect(bench.modelPath == "/models/m.gguf")
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--split", "1,-1"]) }
        #expect(throws: (any Error).self) { try BenchCommand.parse(["-t", "0"]) }
        #expect(try BenchCommand.parse(flags + ["--overlap", "on"]).placement.loadOptions(maxContext: 64, threads: 1).overlap)
        #expect(try GenerateCommand.parse(flags + ["--tokens", "2", "--overlap", "ON"]).modelOptions.loadOptions().overlap)
        #expect(!g.overlap && !b.overlap, "--overlap is off by default")
        #expect(throws: (any Error).self) { try BenchCommand.parse(["--overlap", "yes"]) }
    }

    /// --activations f32 (the exact mode) makes the KV cache f32 unless --kv-type is given;
    /// anything but q8 or f32 is refused. (`resolvedKVType` only: `loadOptions()` would put the
    /// exact mode in force for the whole test process.)
    @Test func exactActivationsDefaultToAnF32Cache() throws {
        let base = ["-m", "/models/m.gguf", "-f", "/texts/t.txt"]
        #expect(try PerplexityCommand.parse(base).modelOptions.resolvedKVType == .f16)
        #expect(try PerplexityCommand.parse(base + ["--activations", "f32"]).modelOptions.resolvedKVType == .f32)
        #expect(try PerplexityCommand.parse(base + ["--activations", "f32", "--kv-type", "f16"]).modelOptions.resolvedKVType == .f16)
        #expect(try GenerateCommand.parse(["--activations", "F32", "--tokens", "2"]).modelOptions.resolvedKVType == .f32)
        #expect(throws: (any Error).self) { try GenerateCommand.parse(["--activations", "bf16", "--tokens", "2"]) }
        #expect(throws: (any Error).self) { try PerplexityCommand.parse(["-m", "/m.gguf"]) }
        #expect(throws: (any Error).self) { try PerplexityCommand.parse(base + ["--kl-base", "a", "--save-logits", "b"]) }
    }
}
