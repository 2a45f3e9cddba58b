// The decode cost model behind `gemma-node plan`, on shipped presets (configs only).
import Foundation
import Testing
import GemmaKernels
import GemmaParallel
@testable import GemmaModel

@Suite("Decode cost model")
struct DecodeCostModelTests {
    /// gemma-3-1b at 2 ranks over 100 us, 1 Gbit/s (1.25e8 B/s), 1 GB/s memory, s = 1 ms,
    /// k = 2 ms, by hand:
    /// - 53 all-reduces (1 + 2 x 26 layers) of 1152 floats = 4608 bytes; at 2 ranks recursive
    ///   doubling, 1 x (100 us + 4608 / 1.25e8 s = 36.864 us) = 136.864 us, beats the ring,
    ///   2 x (100 + 18.432) = 236.864 us: 53 x 136.864 = 7253.792 us;
    /// - agree (4 bytes): 100.032 us; plan broadcast (64 bytes): 100.512 us; sampling
    ///   all-gather (8 bytes, 1 step): 100.064 us. Communication 7554.400 us.
    /// - overhead s + k (N - 1) = 3 ms.
    @Test func handCheckedTwoRanks() throws {
        let c = try #require(try ModelPresets.config(named: "gemma-3-1b"))
        let report = try ShardReport(config: c, ranks: 2, weightType: .q4_K)
        let model = DecodeCostModel(bytesPerSecond: 1e9, linkLatency: 100e-6, linkBytesPerSecond: 1.25e8,
                                    stepSeconds: 1e-3, perExtraRankSeconds: 2e-3)
        let p = model.predict(report, contextTokens: 1000)
        #expect(p.allReduces == 53 && p.allReduceBytes == 4608)
        // Relative 1e-9: the sums above are exact in decimal; Double rounding is ~1e-16.
        #expect(abs(p.communicationSeconds - 7554.400e-6) < 1e-9 * 7554.4e-6 + 1e-12, "\(p.communicationSeconds)")
        #expect(abs(p.overheadSeconds - 3e-3) < 1e-15)
        // Compute: the busier rank's weights (a tied dense model reads all it holds) plus its
        // KV cache of 1000 tokens, at 1e9 B/s.
        let read = report.perRank.map { $0.weightBytes + $0.kvCacheBytes(contextTokens: 1000, slidingRing: report.slidingRing) }.max()!
        #expect(p.readBytesPerToken == read)
        #expect(abs(p.computeSeconds - Double(read) / 1e9) < 1e-15)
        #expect(abs(p.stepSeconds - (p.computeSeconds + 7554.4e-6 + 3e-3)) < 1e-12)
        #expect(abs(p.tokensPerSecond * p.stepSeconds - 1) < 1e-12)
        // One rank: no collective costs anything.
        let one = model.predict(try ShardReport(config: c, ranks: 1, weightType: .q4_K), contextTokens: 1000)
        #expect(one.communicationSeconds == 0 && one.overheadSeconds == 1e-3)
    }

    /// A tied dense model reads every byte it holds; the MoE reads top-8 of 128 experts;
    /// E2B reads one row of its PLE table, not the table.
    @Test func bytesReadPerToken() throws {
        let dense = try ShardReport(config: try #require(try ModelPresets.config(named: "gemma-3-4b")), ranks: 2, weightType: .q4_K)
        #expect(dense.perRank.allSatisfy { $0.decodeReadBytes == $0.weightBytes })
        let moeConfig = try #require(try ModelPresets.config(named: "26b-a4b"))
        let moe = try ShardReport(config: moeConfig, ranks: 1, weightType: .q4_K)
        let rank = moe.perRank[0]
        // Expert bytes E: read = W - E + E x 8/128, so W - read = E x 120/128; E is most of
        // the 26B weights (128 x 30 layers x 3 x 704 x 2816 values ~ 22.8e9 of ~25e9).
        let experts = Double(rank.weightBytes - rank.decodeReadBytes) * 128 / 120
        #expect(experts > 0.8 * Double(rank.weightBytes) && experts < Double(rank.weightBytes))
        let e2b = try ShardReport(config: try #require(try ModelPresets.config(named: "e2b")), ranks: 1, weightType: .q4_K)
        // The PLE table: 262144 x (35 x 256) values; skipping all but one row saves most of it.
        let table = 262_144 * 35 * 256
        #expect(e2b.perRank[0].weightBytes - e2b.perRank[0].decodeReadBytes > table / 2 * 9 / 16)
    }

    /// The all-reduce count follows the config: Gemma 4 with PLE adds one of L x P floats.
    @Test func allReducesFollowTheConfig() throws {
        let e2b = try #require(try ModelPresets.config(named: "e2b"))
        let r = DecodeCostModel.allReduces(config: e2b)
        #expect(r.count == 2 && r[0].count == 71 && r[0].bytes == 4 * 1536 && r[1].count == 1 && r[1].bytes == 4 * 35 * 256)
    }
}
