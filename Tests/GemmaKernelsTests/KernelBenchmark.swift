// Kernel micro-benchmark, off by default: GEMMA_NODE_BENCH=1 swift test --filter KernelBenchmark
// (the C kernels are built with -O2/-O3 even in debug, and the timed loop is C). Prints GB/s of
// weights streamed for every format and level, cache-resident and memory-bound, one thread.

import CKernels
import Foundation
import Testing
@testable import GemmaKernels

@Suite(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] != nil), .serialized)
struct KernelBenchmark {
    static let types: [WeightType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

    func gbps(_ level: KernelLevel, _ type: WeightType, bytes: Int, cols: Int, threads: Int = 1, tokens: Int = 1, reps: Int, f32: Bool = false) -> Double {
        let rb = type.rowBytes(cols)!
        let rows = max(1, bytes / rb)
        let t = ck_bench_matmul(level.cLevel, type.rawValue, Int64(rows), Int64(cols), Int32(threads), Int64(tokens), Int32(reps), f32 ? 1 : 0)
        return Double(rows * rb * tokens) / t / 1e9
    }

    @Test func decodeThroughput() {
        let cached = 96 << 10, streamed = 512 << 20
        let levels = cLevels
        print("GB/s of weights, 1 thread, 1 token; cache-resident \(cached >> 10) KiB / memory-bound \(streamed >> 20) MiB; cols 2048")
        print("type".padding(toLength: 6, withPad: " ", startingAt: 0) + levels.map { "\($0)".padding(toLength: 18, withPad: " ", startingAt: 0) }.joined())
        for type in Self.types {
            var line = "\(type)".padding(toLength: 6, withPad: " ", startingAt: 0)
            for level in levels {
                let c = gbps(level, type, bytes: cached, cols: 2048, reps: 200)
                let m = gbps(level, type, bytes: streamed, cols: 2048, reps: 3)
                line += String(format: "%6.1f / %-9.1f ", c, m)
            }
            print(line)
        }
        print("Q8_0 scheme (a) f32 activations, dequantized in registers:")
        for level in levels {
            let c = gbps(level, .q8_0, bytes: cached, cols: 2048, reps: 200, f32: true)
            let m = gbps(level, .q8_0, bytes: streamed, cols: 2048, reps: 3, f32: true)
            print(String(format: "  %@: %6.1f / %.1f", "\(level)", c, m))
        }
    }

    @Test func threadsAndPrefill() {
        let level = Kernels.best
        for type in [WeightType.q8_0, .q5_0, .q4_K, .q6_K] {
            let m1 = gbps(level, type, bytes: 256 << 20, cols: 2048, threads: 1, reps: 3)
            let m2 = gbps(level, type, bytes: 256 << 20, cols: 2048, threads: 2, reps: 3)
            // Prefill: 128 tokens through a [2048, 640] (FFN-up-sized) matrix; effective GB/s
            // counts the weights once per token, as T separate passes would have to read them.
            let rb = type.rowBytes(type.blockSize == 256 ? 768 : 640)!
            let cols = type.blockSize == 256 ? 768 : 640
            let p1 = gbps(level, type, bytes: 2048 * rb, cols: cols, threads: 1, tokens: 128, reps: 5)
            let p2 = gbps(level, type, bytes: 2048 * rb, cols: cols, threads: 2, tokens: 128, reps: 5)
            print(String(format: "%@ %@: stream 1T %.1f 2T %.1f GB/s; prefill T=128 effective 1T %.1f 2T %.1f GB/s",
                         "\(type)", "\(level)", m1, m2, p1, p2))
        }
    }
}

/// The matmuls of one Gemma 3 270M Q4_K_M step (shapes and per-layer types of the default GGUF,
/// synthetic zeroed weights): milliseconds per decoded token and prefill tokens/s from matmuls
/// alone, an upper bound for the engine. Off by default like the suite above.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] != nil), .serialized)
struct ModelShapeBenchmark {
    /// (type, rows, cols) for every weight matmul of one token, LM head last.
    static func plan() throws -> [WeightMatrix] {
        let v = Array("885585585585585888"), down = Array("664464464464464666")
        var ms: [WeightMatrix] = []
        for l in 0..<18 {
            ms.append(try WeightMatrix(type: .q5_0, rows: 1024, cols: 640))                    // q
            ms.append(try WeightMatrix(type: .q5_0, rows: 256, cols: 640))                     // k
            ms.append(try WeightMatrix(type: v[l] == "8" ? .q8_0 : .q5_0, rows: 256, cols: 640)) // v
            ms.append(try WeightMatrix(type: .q4_K, rows: 640, cols: 1024))                    // o
            ms.append(try WeightMatrix(type: .q5_0, rows: 2048, cols: 640))                    // gate
            ms.append(try WeightMatrix(type: .q5_0, rows: 2048, cols: 640))                    // up
            ms.append(try WeightMatrix(type: down[l] == "6" ? .q6_K : .q4_K, rows: 640, cols: 2048))
        }
        ms.append(try WeightMatrix(type: .q8_0, rows: 262_144, cols: 640))                     // LM head
        return ms
    }

    @Test func gemma3_270mStep() throws {
        let ms = try Self.plan()
        let bytes = ms.reduce(0) { $0 + $1.byteCount }
        let x = [Float](repeating: 0.01, count: 128 * 2048)
        var y = [Float](repeating: 0, count: 128 * 262_144)
        for threads in [1, 2] {
            let pool = ThreadPool(threads: threads)
            func run(_ tokens: Int, lmHead: Bool) -> Double {
                var best = Double.infinity
                for _ in 0..<5 {
                    let t0 = ck_now()
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in
                            for m in ms where lmHead || m.rows != 262_144 {
                                matmul(m, x: xp.baseAddress!, xStride: m.cols, tokens: tokens, y: yp.baseAddress!, yStride: m.rows, pool: pool)
                            }
                        }
                    }
                    best = min(best, ck_now() - t0)
                }
                return best
            }
            let decode = run(1, lmHead: true)
            let prefill = run(128, lmHead: false)  // prefill needs the LM head for the last token only
            print(String(format: "270M matmuls, %d thread(s), %@: decode %.2f ms/token (%.1f tok/s, %.1f GB/s of %d MB), prefill T=128 %.0f tok/s (layers only)",
                         threads, "\(Kernels.active)", decode * 1e3, 1 / decode, Double(bytes) / decode / 1e9, bytes >> 20, 128 / prefill))
        }
    }
}
