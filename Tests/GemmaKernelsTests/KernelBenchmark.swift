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
