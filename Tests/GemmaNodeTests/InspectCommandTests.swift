// `gemma-node inspect` as users see it: the built binary on a fixture model directory.
import Foundation
import Testing
import GemmaTestSupport

@Suite("inspect command")
struct InspectCommandTests {
    let fixtures = TestPaths.fixture("hf")

    @Test func printsArchitectureAndPerRankShares() throws {
        let out = try GemmaNodeBinary.run(["inspect", "-m", fixtures.appendingPathComponent("gemma3_pattern").path, "--ranks", "4"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("architecture: gemma3 (gemma3_text), 7 layers [SSSSSFS]"))
        #expect(out.stdout.contains("KV heads replicated"))
        #expect(out.stdout.contains("rank 3: q heads [3, 4), kv heads [1, 2), mlp columns [96, 128), vocab [192, 256)"))
    }

    @Test func jsonOutputParses() throws {
        let out = try GemmaNodeBinary.run(["inspect", "-m", fixtures.appendingPathComponent("gemma1_mqa").path, "--ranks", "2", "--json"])
        #expect(out.status == 0, "\(out.all)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
        let ranks = try #require(json["perRank"] as? [[String: Any]])
        #expect(ranks.count == 2)
        #expect(ranks.map { $0["kvHeads"] as? [Int] } == [[0, 1], [0, 1]])  // MQA: the one KV head on both ranks
        let bytes = ranks.compactMap { $0["weightBytes"] as? Int }
        #expect(bytes.count == 2 && bytes[0] == bytes[1] && bytes[0] > 0)
        #expect((json["totalWeightBytes"] as? Int).map { $0 > bytes[0] } == true)
    }

    @Test func refusesAnImpossibleSplitWithTheReason() throws {
        let out = try GemmaNodeBinary.run(["inspect", "-m", fixtures.appendingPathComponent("gemma2_softcap").path, "--ranks", "3"])
        #expect(out.status != 0)
        #expect(out.stderr.contains("cannot split num_attention_heads (layer 0) = 4 evenly across 3 ranks"), "\(out.all)")
    }

    /// --kv-type sizes the planned cache and is named in the text and the JSON; q8_0 is refused
    /// for head dims that are not whole 32-value blocks (the fixtures' 16), as the loader does.
    @Test func kvTypeInTextAndJSON() throws {
        let model = fixtures.appendingPathComponent("gemma3_pattern").path
        var perK: [String: Int] = [:]
        for type in ["f32", "f16"] {
            let out = try GemmaNodeBinary.run(["inspect", "-m", model, "--kv-type", type, "--json"])
            #expect(out.status == 0, "\(out.all)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
            #expect(json["kvType"] as? String == type)
            let ranks = try #require(json["perRank"] as? [[String: Any]])
            perK[type] = ranks.first?["kvCacheBytesPer1KTokens"] as? Int
        }
        #expect(perK["f32"] != nil && perK["f32"] == perK["f16"].map { 2 * $0 })
        let text = try GemmaNodeBinary.run(["inspect", "-m", model])
        #expect(text.stdout.contains("f16 KV cache"), "\(text.all)")
        let q8 = try GemmaNodeBinary.run(["inspect", "-m", model, "--kv-type", "q8_0"])
        #expect(q8.status != 0)
        #expect(q8.stderr.contains("layer 0 has head dim 16"), "\(q8.all)")
    }
}
