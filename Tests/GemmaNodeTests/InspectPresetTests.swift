// `gemma-node inspect --config PRESET`: planning the released Gemma 4 models from their shipped
// configs, without any checkpoint, as a user would to size a cluster.
import Foundation
import Testing
import GemmaTestSupport

@Suite("inspect --config presets")
struct InspectPresetTests {
    @Test func plans31BAtFourBits() throws {
        let out = try GemmaNodeBinary.run(["inspect", "--config", "31b", "--quant", "q4_k", "--ranks", "4"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("architecture: gemma4 (gemma4_text), 60 layers"))
        #expect(out.stdout.contains("full layers head dim 512 x 4 kv"), "\(out.stdout)")
        #expect(out.stdout.contains("rank 3: q heads [24, 32)"))
        #expect(out.stdout.contains("largest rank"))
    }

    @Test func everyPresetPlansAsJSON() throws {
        for name in ["e2b", "e4b", "31b", "26b-a4b"] {
            let out = try GemmaNodeBinary.run(["inspect", "--config", name, "--ranks", "2", "--json"])
            #expect(out.status == 0, "\(name): \(out.all)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
            let ranks = try #require(json["perRank"] as? [[String: Any]])
            #expect(ranks.count == 2)
            let bytes = ranks.compactMap { $0["weightBytes"] as? Int }
            let total = try #require(json["totalWeightBytes"] as? Int)
            #expect(bytes.count == 2 && bytes.allSatisfy { $0 > total / 2 && $0 < total }, "\(name): \(bytes) of \(total)")
        }
    }

    @Test func unknownPresetIsNamed() throws {
        let out = try GemmaNodeBinary.run(["inspect", "--config", "gemma-9-1t"])
        #expect(out.status != 0)
        #expect(out.stderr.contains("unknown preset \"gemma-9-1t\""), "\(out.all)")
    }
}

@Suite("inspect on GGUF files")
struct InspectGGUFTests {
    @Test func plansAGemma4GGUF() throws {
        let file = TestPaths.fixture("gguf_gemma4/gemma4_moe.gguf")
        let out = try GemmaNodeBinary.run(["inspect", "-m", file.path, "--ranks", "2"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("architecture: gemma4 (gemma4_text), 3 layers [SSF]"))
        #expect(out.stdout.contains("MoE 8 experts top-2"))
        #expect(out.stdout.contains("rank 1: q heads [2, 4)"))
    }
}
