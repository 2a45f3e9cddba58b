// `gemma-node synth` as users run it: a Gemma 3 and a Gemma 4 preset (few layers, a small
// vocabulary) written by the binary, then `generate` on them under the real mpirun at 1 and
// 2 ranks (greedy tokens equal, logits finite); --dry-run's plan; bad input refused clearly.
import Foundation
import Testing
import GemmaTestSupport

@Suite(.serialized) struct SynthCommandTests {
    func tempPath(_ tag: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("synth-cli-\(tag)-\(UUID().uuidString).gguf").path
    }

    @Test(arguments: [("gemma-3-1b", "4"), ("gemma-4-e2b", "6")])
    func synthesizedModelGeneratesTheSameAtOneAndTwoRanks(preset: String, layers: String) throws {
        _ = try TestPaths.requireDefaultModel()
        let path = tempPath(preset)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let synth = try GemmaNodeBinary.run(["synth", "--config", preset, "--quant", "q4_k", "--layers", layers, "--vocab", "4096",
                                             "--seed", "11", "-o", path], timeout: 300)
        #expect(synth.status == 0, "\(synth.all)")
        #expect(synth.stderr.contains("wrote \(path)"), "\(synth.stderr)")
        var outputs: [[Int]] = []
        for ranks in [1, 2] {
            let gen = try GemmaNodeBinary.mpirun(ranks: ranks, ["generate", "-m", path, "--tokens", "2,818,1279,529", "-n", "8",
                                                                "--temp", "0", "--json", "-t", "1"], timeout: 300)
            #expect(!gen.timedOut)
            #expect(gen.status == 0, "\(gen.all)")
            let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(gen.stdout.utf8))
            #expect(out.tokens.count == 8 || out.finish_reason == "stop", "\(gen.stdout)")
            outputs.append(out.tokens)
            let logits = try GemmaNodeBinary.mpirun(ranks: ranks, ["logits", "-m", path, "--tokens", "2,818,1279,529", "--layer-rms", "-t", "1"], timeout: 300)
            #expect(logits.status == 0, "\(logits.all)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(logits.stdout.utf8)) as? [String: Any])
            let positions = try #require(json["positions"] as? [[String: Any]])
            // JSONText writes non-finite values as null, which would not decode as numbers.
            let values = try #require(positions.last?["logits"] as? [Double])
            #expect(values.count == 4096 && values.allSatisfy(\.isFinite))
            let rms = try #require(json["layer_rms"] as? [Double])
            #expect(rms.count == Int(layers)! + 1 && rms.allSatisfy { $0.isFinite && $0 > 0 }, "\(rms)")
        }
        #expect(outputs[0] == outputs[1], "greedy tokens differ between 1 and 2 ranks: \(outputs)")
        #expect(Set(outputs[0]).count > 1, "greedy output is one repeated token: \(outputs[0])")
    }

    @Test func dryRunPrintsThePlanAndWritesNothing() throws {
        let path = tempPath("dry")
        let r = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-4b", "--dry-run", "-o", path])
        #expect(r.status == 0, "\(r.all)")
        #expect(r.stdout.contains("blk.33.ffn_down.weight\tQ6_K\t[10240, 2560]"), "\(r.stdout.suffix(500))")
        #expect(r.stdout.contains("token_embd.weight\tQ6_K\t[2560, 262144]"))
        #expect(r.stdout.contains("gemma-3-4b q4_k: 34 layers, vocab 262144"), "\(r.stdout.suffix(500))")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func badInputIsRefusedClearly() throws {
        let unknown = try GemmaNodeBinary.run(["synth", "--config", "gemma-7-huge", "-o", tempPath("x")])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("unknown preset \"gemma-7-huge\"") && unknown.stderr.contains("gemma-3-27b"), "\(unknown.all)")
        let folder = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-1b", "--layers", "1", "--vocab", "512", "-o", "/nonexistent-dir/m.gguf"])
        #expect(folder.status != 0)
        #expect(folder.stderr.contains("folder /nonexistent-dir does not exist"), "\(folder.all)")
        let quant = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-1b", "--quant", "q3_k", "-o", tempPath("q")])
        #expect(quant.status != 0 && quant.stderr.contains("--quant must be q4_k, q8_0 or bf16"), "\(quant.all)")
        let noOut = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-1b"])
        #expect(noOut.status != 0 && noOut.stderr.contains("-o"), "\(noOut.all)")
        let layers = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-1b", "--layers", "99", "--dry-run"])
        #expect(layers.status != 0 && layers.stderr.contains("--layers must be in 1...26"), "\(layers.all)")
        let tok = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-1b", "--dry-run", "--tokenizer", "/nonexistent.gguf"])
        #expect(tok.status != 0 && tok.stderr.contains("cannot read the tokenizer source"), "\(tok.all)")
        let router = try GemmaNodeBinary.run(["synth", "--config", "gemma-4-26b-a4b", "--router", "sharp", "--dry-run"])
        #expect(router.status != 0 && router.stderr.contains("--router must be spread or decisive"), "\(router.all)")
        let dense = try GemmaNodeBinary.run(["synth", "--config", "gemma-3-1b", "--router", "decisive", "--dry-run"])
        #expect(dense.status != 0 && dense.stderr.contains("decisive routing applies to MoE presets only"), "\(dense.all)")
    }
}
