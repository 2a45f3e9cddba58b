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
import GemmaTestSupport

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
        var g = SplitMix64(seed: 5)
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

/// One 26B-A4B-shaped MoE layer (H 2816, E 128, top-8, Ie 704, Q8_0 experts: 808 MiB per layer)
/// with synthetic weights, so a rank's experts (202–808 MiB) do not fit in cache and decode reads
/// them from DRAM as the real model does. Same simulation of ranks as above; a 64 MiB buffer is
/// rewritten between measured calls so each token starts with its experts out of cache.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] != nil), .serialized)
struct MoE26BLayerBenchmark {
    /// Q8_0 rows with valid scales (0.01) and random quants, built straight as bytes.
    static func randomQ8(rows: Int, cols: Int, seed: UInt64) throws -> QuantizedTensor {
        var g = SplitMix64(seed: seed)
        let blocks = cols / 32
        var bytes = [UInt8](repeating: 0, count: rows * blocks * 34)
        let scale = Float16(0.01).bitPattern
        bytes.withUnsafeMutableBytes { p in
            for b in 0..<(rows * blocks) {
                let base = p.baseAddress! + b * 34
                base.storeBytes(of: scale, as: UInt16.self)
                for q in 0..<4 { (base + 2 + 8 * q).storeBytes(of: g.next(), toByteOffset: 0, as: UInt64.self) }
            }
        }
        return QuantizedTensor(raw: bytes, type: .q8_0, rows: rows, cols: cols)
    }

    /// A 26B-A4B-shaped MoE layer (hidden 2816, 128 experts, top 8, expert width 704) with
    /// random Q8_0 expert weights and a random router, read from memory; also the generator
    /// that drew the router, to continue with the inputs.
    static func layer26B() throws -> (MoEDims, MoETensorReader, SplitMix64) {
        let h = 2816, e = 128, ie = 704
        let dims = try MoEDims(hidden: h, experts: e, topK: 8, expertIntermediate: ie, eps: 1e-6)
        let gu = try randomQ8(rows: e * 2 * ie, cols: h, seed: 1)
        let dn = try randomQ8(rows: e * h, cols: ie, seed: 2)
        var g = SplitMix64(seed: 3)
        let small = MoETensorReader.inMemory([.routerProj: ([e, h], g.floats(e * h, scale: 3)), .routerScale: ([1, h], [Float](repeating: 1, count: h)),
                                              .perExpertScale: ([1, e], [Float](repeating: 1, count: e)), .preNorm2: ([1, h], [Float](repeating: 1, count: h))])
        let reader = MoETensorReader(
            matrix: { t, rows, cols in
                switch t {
                case .gateUp: return try gu.slice(rows, cols)
                case .down: return try dn.slice(rows, cols)
                default: return try small.matrix(t, rows, cols)
                }
            }, floats: small.floats)
        return (dims, reader, g)
    }

    @Test func decodeAndPrefill() throws {
        let (dims, reader, rng) = try Self.layer26B()
        var g = rng
        let h = dims.hidden
        let tokens = 48, prefill = 64
        let xs = g.floats(prefill * h, scale: 2)
        var flush = [UInt8](repeating: 0, count: 64 << 20)
        let pool = ThreadPool(threads: 1)
        let bench = MoEBenchmark()
        print("26B-A4B-shaped MoE layer (H 2816, E 128, top-8, Ie 704, Q8_0), 1 thread per rank, thread CPU time, cold experts")
        print("| strategy | R | MiB held/rank | decode ms/token/layer (slowest rank) | mean rank | prefill T64 ms (slowest) |")
        for ranks in [1, 2, 4] {
            for strategy in MoEStrategy.allCases {
                if ranks == 1 && strategy == .expertParallel { continue }
                let shards = try MoEPlan.shards(dims: dims, ranks: ranks, strategy: strategy, blockSize: 32)
                let blocks = try shards.map { try MoEBlock.load(dims: dims, shard: $0, read: reader, scratch: MoEScratch()) }
                var times = [[Double]](repeating: [], count: ranks)
                var prefillTimes: [Double] = []
                var out = [Float](repeating: 0, count: prefill * h)
                xs.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBufferPointer { op in
                        for (r, b) in blocks.enumerated() {
                            for tok in 0..<tokens {
                                for i in stride(from: 0, to: flush.count, by: 64) { flush[i] &+= 1 }
                                let t0 = bench.now()
                                b(residual: xp.baseAddress! + tok * h, tokens: 1, into: op.baseAddress!, pool: pool)
                                times[r].append(bench.now() - t0)
                            }
                            for i in stride(from: 0, to: flush.count, by: 64) { flush[i] &+= 1 }
                            let t0 = bench.now()
                            b(residual: xp.baseAddress!, tokens: prefill, into: op.baseAddress!, pool: pool)
                            prefillTimes.append(bench.now() - t0)
                        }
                    }
                }
                let slowest = (0..<tokens).map { tok in (0..<ranks).map { times[$0][tok] }.max()! }.reduce(0, +) / Double(tokens)
                let mean = times.flatMap { $0 }.reduce(0, +) / Double(tokens * ranks)
                print(String(format: "| %@ | %d | %.0f | %.2f | %.2f | %.1f |", strategy.description, ranks,
                             Double(blocks.map(\.expertBytes).max()!) / 1048576, slowest * 1000, mean * 1000, prefillTimes.max()! * 1000))
                #expect(slowest > 0)
            }
        }
    }
}

/// Decode with a multi-thread pool: the rank's selected experts side by side (one dispatch per
/// layer) vs each expert's matmuls split over the threads (two dispatches per expert). One rank
/// of a 26B-shaped layer at R 4 (column split), cold experts, wall time (min of 5 per token: the
/// threads really run in parallel here, so CPU time would not show latency).
@Suite(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] != nil), .serialized)
struct MoEGroupedDecodeBenchmark {
    @Test func groupedVsSplit() throws {
        let (dims, reader, rng) = try MoE26BLayerBenchmark.layer26B()
        var g = rng
        let h = dims.hidden
        let shard = try MoEPlan.shards(dims: dims, ranks: 4, strategy: .columnSplit, blockSize: 32)[0]
        var block = try MoEBlock.load(dims: dims, shard: shard, read: reader, scratch: MoEScratch())
        let tokens = 32
        let xs = g.floats(tokens * h, scale: 2)
        var out = [Float](repeating: 0, count: h)
        var flush = [UInt8](repeating: 0, count: 64 << 20)
        func wall() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        for threads in [2] {
            let pool = ThreadPool(threads: threads)
            var line = "threads \(threads):"
            for grouped in [true, false, true, false] {
                block.groupedDecode = grouped
                var total = 0.0
                try xs.withUnsafeBufferPointer { xp in
                    try out.withUnsafeMutableBufferPointer { op in
                        for tok in 0..<tokens {
                            var best = Double.infinity
                            for _ in 0..<5 {
                                for i in stride(from: 0, to: flush.count, by: 64) { flush[i] &+= 1 }
                                let t0 = wall()
                                block(residual: xp.baseAddress! + tok * h, tokens: 1, into: op.baseAddress!, pool: pool)
                                best = min(best, wall() - t0)
                            }
                            total += best
                        }
                        _ = try #require(op.baseAddress)
                    }
                }
                line += String(format: " %@ %.3f ms/token", grouped ? "grouped" : "split", total / Double(tokens) * 1000)
            }
            print(line)
        }
    }
}
