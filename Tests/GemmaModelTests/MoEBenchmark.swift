// Column-split vs expert-parallel MoE on a tiny-but-not-trivial block (H 1024, Ie 256 — the
// 4:1 aspect of 26B-A4B's 2816:704 — Q8_0 experts), at 1/2/4 ranks, decode (T 1) and prefill
// (T 64). Ranks are simulated one after another on one thread each (the box has 2 shared
// cores, so running them concurrently would time the scheduler): a step costs the slowest
// rank; times are thread CPU time. Off by default: GEMMA_NODE_BENCH=1 swift test --filter MoEBenchmark (docs/MOE.md).
import Foundation
import Testing
@testable import GemmaModel
import GemmaKernels
import GemmaParallel

@Suite(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] != nil), .serialized)
struct MoEBenchmark {
    /// CPU time of this thread: the ranks run on one thread with a 1-thread pool, so this is
    /// their compute without the time other processes on the shared cores took (wall time
    /// under load average ~12 on 2 cores was mostly preemption).
    func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    @Test(arguments: [(32, 8), (16, 2)])
    func strategies(experts: Int, topK: Int) throws {
        let h = 1024, ie = 256
        let dims = try MoEDims(hidden: h, experts: experts, topK: topK, expertIntermediate: ie, eps: 1e-6)
        let w = MoETensors.random(dims, seed: 77)
        let reader = try quantizedReader(w, type: .q8_0)
        var g = MoERNG(state: 5)
        let decodeTokens = 32, prefill = 64
        let xs = g.floats(prefill * h, scale: 2)
        let pool = ThreadPool(threads: 1)
        print("MoE H \(h) Ie \(ie) E \(experts) top-\(topK) Q8_0, 1 thread per rank")
        print("| strategy | R | held MiB/rank | decode ms/tok (max rank) | decode pairs max/mean | decode MiB read max/mean | prefill T64 ms (max rank) | prefill imbalance (time max/mean) |")
        for ranks in [1, 2, 4] {
            for strategy in MoEStrategy.allCases {
                if ranks == 1 && strategy == .expertParallel { continue }  // same as column at R 1
                let shards = try MoEPlan.shards(dims: dims, ranks: ranks, strategy: strategy, blockSize: 32)
                let blocks = try shards.map { try MoEBlock.load(dims: dims, shard: $0, read: reader, scratch: MoEScratch()) }
                let held = Double(blocks.map(\.expertBytes).max() ?? 0) / 1048576
                let perExpertBytes = blocks.map { $0.experts.isEmpty ? 0 : Double($0.experts[0].byteCount) }
                var out = [Float](repeating: 0, count: prefill * h)
                // Decode: each token alone; per token the step waits for the slowest rank.
                var decodeTime = 0.0, pairsMax = 0.0, pairsMean = 0.0, readMax = 0.0, readMean = 0.0
                try xs.withUnsafeBufferPointer { xp in
                    try out.withUnsafeMutableBufferPointer { op in
                        for tok in 0..<decodeTokens {
                            let x = xp.baseAddress! + tok * h
                            let chosen = blocks[0].routing(residual: x, tokens: 1, pool: pool).indices.map(Int.init)
                            var times: [Double] = []
                            var pairs: [Double] = []
                            for (r, b) in blocks.enumerated() {
                                var best = Double.infinity
                                for _ in 0..<5 {
                                    let t0 = now()
                                    b(residual: x, tokens: 1, into: op.baseAddress!, pool: pool)
                                    best = min(best, now() - t0)
                                }
                                times.append(best)
                                pairs.append(Double(chosen.filter { b.shard.experts.contains($0) }.count))
                                _ = r
                            }
                            decodeTime += times.max()!
                            pairsMax += pairs.max()!
                            pairsMean += pairs.reduce(0, +) / Double(ranks)
                            let reads = zip(pairs, perExpertBytes).map { $0 * $1 }
                            readMax += reads.max()!
                            readMean += reads.reduce(0, +) / Double(ranks)
                        }
                        _ = try #require(op.baseAddress)
                    }
                }
                // Prefill: 64 tokens at once.
                var prefillTimes: [Double] = []
                xs.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBufferPointer { op in
                        for b in blocks {
                            var best = Double.infinity
                            for _ in 0..<5 {
                                let t0 = now()
                                b(residual: xp.baseAddress!, tokens: prefill, into: op.baseAddress!, pool: pool)
                                best = min(best, now() - t0)
                            }
                            prefillTimes.append(best)
                        }
                    }
                }
                let n = Double(decodeTokens)
                let pMax = prefillTimes.max()!, pMean = prefillTimes.reduce(0, +) / Double(ranks)
                print(String(format: "| %@ | %d | %.1f | %.3f | %.2f / %.2f | %.2f / %.2f | %.2f | %.2f |", strategy.description, ranks, held,
                             decodeTime / n * 1000, pairsMax / n, pairsMean / n, readMax / n / 1048576, readMean / n / 1048576,
                             pMax * 1000, pMax / pMean))
                #expect(held > 0)
            }
        }
    }
}
