// The memory fit behind `inspect --fit` / `--machines`, on shipped presets (configs only:
// nothing is loaded).
import Foundation
import Testing
import GemmaKernels
import GemmaParallel
@testable import GemmaModel

@Suite("Memory fit")
struct MemoryFitTests {
    static func planner(_ name: String, kvType: KVCacheType = .f32) throws -> ([Double]) throws -> ShardReport {
        let c = try #require(try ModelPresets.config(named: name))
        return { shares in try ShardReport(config: c, ranks: shares.count, weightType: .q4_K, split: shares, kvType: kvType) }
    }

    /// gemma-3-4b Q4_K (2.4 GB of weights, 544 MiB of f32 KV per 1K tokens at 1 rank) on
    /// 1.5 + 1.5 + 3 GB: fits, the large machine gets the large share, and the printed
    /// --split re-planned gives the same per-rank bytes.
    @Test func fitsUnevenMachines() throws {
        let plan = try Self.planner("gemma-3-4b")
        let caps = [1_500_000_000, 1_500_000_000, 3_000_000_000]
        let fit = try MemoryFit.fit(capacities: caps, overheadBytes: 150_000_000, contextTokens: 4096, plan: plan)
        #expect(fit.fits, "\(fit.text)")
        #expect(fit.ranks.count == 3)
        for f in fit.ranks {
            #expect(f.plannedBytes <= caps[f.rank], "rank \(f.rank): \(f.plannedBytes) > \(caps[f.rank])")
            #expect(f.overheadBytes == 150_000_000)
        }
        #expect(fit.shares[2] > fit.shares[0] && fit.shares[2] > fit.shares[1], "\(fit.shares)")
        let shares = fit.splitText.split(separator: ",").map { Double($0)! }
        let again = try plan(shares)
        #expect(again.perRank.map(\.weightBytes) == fit.ranks.map(\.weightBytes))
        #expect(fit.text.hasPrefix("fits: --split \(fit.splitText)"))
    }

    /// The same model on 1 + 1 GB does not fit (2.4 GB of weights alone): every machine is
    /// named short, and the text says by how much in all.
    @Test func tooLittleMemoryNamesTheShortMachines() throws {
        let fit = try MemoryFit.fit(capacities: [1_000_000_000, 1_000_000_000], overheadBytes: 150_000_000, contextTokens: 4096,
                                    plan: try Self.planner("gemma-3-4b"))
        #expect(!fit.fits)
        #expect(fit.ranks.contains { $0.shortBytes > 0 })
        #expect(fit.text.hasPrefix("does not fit: machine "), "\(fit.text)")
        #expect(fit.text.contains("in all the machines lack"))
        #expect(fit.tooSmall.isEmpty, "neither machine is too small for its smallest share")
    }

    /// A 0.2 GB machine beside two 8 GB ones: the others could hold everything, but 0.2 GB
    /// is less than the overhead plus the smallest share (34 layers of one KV group and one
    /// 256-column MLP block): that machine alone is named, with its shortfall.
    @Test func aMachineTooSmallForAnyShareIsNamed() throws {
        let caps = [200_000_000, 8_000_000_000, 8_000_000_000]
        let fit = try MemoryFit.fit(capacities: caps, overheadBytes: 150_000_000, contextTokens: 4096, plan: try Self.planner("gemma-3-4b"))
        #expect(!fit.fits)
        #expect(fit.ranks.filter { $0.shortBytes > 0 }.map(\.rank) == [0], "\(fit.text)")
        #expect(fit.tooSmall.map(\.rank) == [0])
        let short = fit.ranks[0].shortBytes
        #expect(short > 0 && short == fit.ranks[0].plannedBytes - caps[0])
        #expect(fit.text.contains("machine 0 (0.20 GB) is short by"), "\(fit.text)")
        #expect(fit.text.contains("cannot hold even the smallest share"))
    }

    /// --machines: the fewest equal machines; one fewer does not fit (or cannot be split).
    @Test func fewestMachinesIsMinimal() throws {
        let plan = try Self.planner("gemma-3-12b")
        let fit = try #require(try MemoryFit.fewestMachines(capacity: 4_000_000_000, overheadBytes: 150_000_000, contextTokens: 4096, plan: plan))
        #expect(fit.fits)
        #expect(fit.ranks.allSatisfy { $0.plannedBytes <= 4_000_000_000 })
        let n = fit.ranks.count
        #expect(n > 1)
        let fewer = try MemoryFit.fit(capacities: [Int](repeating: 4_000_000_000, count: n - 1), overheadBytes: 150_000_000,
                                      contextTokens: 4096, plan: plan)
        #expect(!fewer.fits)
    }

    /// A smaller KV type needs no more machines, and at 32K tokens it needs no fewer.
    @Test func kvTypeAndContextMoveTheAnswer() throws {
        func machines(_ kv: KVCacheType, _ ctx: Int) throws -> Int {
            try #require(try MemoryFit.fewestMachines(capacity: 8_000_000_000, overheadBytes: 150_000_000, contextTokens: ctx,
                                                      plan: try Self.planner("gemma-3-27b", kvType: kv))).ranks.count
        }
        let f32 = try machines(.f32, 32768), q8 = try machines(.q8_0, 32768)
        #expect(q8 <= f32)
        #expect(try machines(.f32, 4096) <= f32)
        #expect(f32 > 2)
    }
}

@Suite("Planning the Q4_K_M mix")
struct FileMixPlanTests {
    /// `--quant q4_k_m` plans every tensor at the type `synth --quant q4_k` writes: the
    /// planned total equals the synthetic file's tensor bytes.
    @Test func plansWhatSynthWrites() throws {
        for name in ["gemma-3-1b", "gemma-3-27b", "gemma-4-e2b", "gemma-4-26b-a4b"] {
            let c = try #require(try ModelPresets.config(named: name))
            let planned = try ShardReport(config: c, ranks: 1, weightType: .q4_K, fileMix: .q4_k)
            let file = try SyntheticModel(preset: name, quant: .q4_k)
            // Gemma 4 files also hold rope_freqs (256 F32 values, llama.cpp's encoding of
            // proportional RoPE), which no rank keeps as a weight: the plan leaves it out.
            let ropeFreqs = file.tensors.filter { $0.name.hasPrefix("rope_freqs") }.reduce(0) { $0 + $1.byteCount }
            #expect(ropeFreqs == (c.generation == .gemma4 ? 1024 : 0), "\(name)")
            #expect(planned.totalWeightBytes == file.dataBytes - ropeFreqs, "\(name)")
            #expect(planned.perRank[0].weightBytes == file.dataBytes - ropeFreqs, "\(name)")
        }
    }
}

@Suite("Activation bytes")
struct ActivationBytesTests {
    /// The default model's shape (H 640, 4 heads of 256, 1 KV head, MLP 2048, vocabulary
    /// 262144) at 512 tokens per step, by hand: per token 4 x 640 + 2 x 1024 (q, attention
    /// output) + 2 x 256 (k, v) + 2 x 2048 (gate, up) + 256 + 256 (RoPE tables of both layer
    /// types) = 9728 floats; 512 tokens plus one logits row of 262144: 4 x (512 x 9728 + 262144)
    /// = 20,971,520 bytes at 1 rank. At 2 ranks: q 512, KV 256 (replicated), MLP 1024:
    /// 4 x 640 + 1024 + 512 + 2048 + 512 = 6656 floats; 4 x (512 x 6656 + 131072) = 14,155,776.
    @Test func handCheckedOnTheDefaultModelsShape() throws {
        let c = try GemmaConfig(configDictionary: [
            "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "sliding_window": 512,
            "layer_types": ["sliding_attention", "full_attention"], "query_pre_attn_scalar": 256,
        ])
        let one = try ShardReport(config: c, ranks: 1, weightType: .q8_0)
        #expect(one.perRank[0].activationBytes == 20_971_520)
        let two = try ShardReport(config: c, ranks: 2, weightType: .q8_0)
        #expect(two.perRank.map(\.activationBytes) == [14_155_776, 14_155_776])
    }
}
