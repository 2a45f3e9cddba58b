// The two operations the model needs from a weight matrix, whatever its format:
//   matmul: y[t, r] = sum_c W[r, c] * x[t, c] for a batch of token activations
//   dequantizeRow: one row of W as f32 (embedding lookups)
// Format-specific work is delegated to the per-format kernels; this file only dispatches
// and splits output rows across the thread pool.

import Foundation

/// Fixed set of worker threads for one rank's compute (`-t`). `parallelFor` splits
/// `0..<count` into contiguous chunks, one per thread, and returns when all are done.
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int

    public init(threads: Int) {
        self.threads = max(1, threads)
    }

    /// Runs `body(start, end)` over disjoint chunks covering `0..<count`.
    public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
        let chunks = min(threads, max(1, count / max(1, minChunk)))
        if chunks <= 1 {
            body(0, count)
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UnsafeSendableBox(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { i in
                let start = count * i / chunks
                let end = count * (i + 1) / chunks
                if start < end { box.value(start, end) }
            }
        }
    }
}

/// Wraps a non-Sendable value for hand-off to worker threads whose lifetime is bounded
/// by the caller (the caller waits for them).
public struct UnsafeSendableBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

/// y[t * yStride + r] = dot(W[r, :], x[t * xStride ..< t * xStride + cols]) for
/// t in 0..<tokens, r in 0..<W.rows.
public func matmul(
    _ w: WeightMatrix,
    x: UnsafePointer<Float>, xStride: Int,
    tokens: Int,
    y: UnsafeMutablePointer<Float>, yStride: Int,
    pool: ThreadPool
) {
    let xs = UnsafeSendableBox(x)
    let ys = UnsafeSendableBox(y)
    pool.parallelFor(w.rows, minChunk: 16) { r0, r1 in
        for t in 0..<tokens {
            let xt = xs.value + t * xStride
            let yt = ys.value + t * yStride
            for r in r0..<r1 {
                yt[r] = dotRow(w, row: r, x: xt)
            }
        }
    }
}

/// One row of W dotted with an f32 vector of length W.cols (scalar reference path).
@inline(__always)
public func dotRow(_ w: WeightMatrix, row r: Int, x: UnsafePointer<Float>) -> Float {
    let p = w.row(r)
    switch w.type {
    case .f32:
        let wp = p.assumingMemoryBound(to: Float.self)
        var acc: Float = 0
        for c in 0..<w.cols { acc += wp[c] * x[c] }
        return acc
    case .f16:
        let wp = p.assumingMemoryBound(to: UInt16.self)
        var acc: Float = 0
        for c in 0..<w.cols { acc += halfToFloat(wp[c]) * x[c] }
        return acc
    case .bf16:
        let wp = p.assumingMemoryBound(to: UInt16.self)
        var acc: Float = 0
        for c in 0..<w.cols { acc += Float(bitPattern: UInt32(wp[c]) << 16) * x[c] }
        return acc
    default:
        var tmp = [Float](repeating: 0, count: w.cols)
        tmp.withUnsafeMutableBufferPointer { dequantizeRow(w, row: r, into: $0.baseAddress!) }
        var acc: Float = 0
        for c in 0..<w.cols { acc += tmp[c] * x[c] }
        return acc
    }
}

/// Writes row `r` of W as W.cols floats.
public func dequantizeRow(_ w: WeightMatrix, row r: Int, into out: UnsafeMutablePointer<Float>) {
    let p = w.row(r)
    switch w.type {
    case .f32:
        out.update(from: p.assumingMemoryBound(to: Float.self), count: w.cols)
    case .f16:
        let wp = p.assumingMemoryBound(to: UInt16.self)
        for c in 0..<w.cols { out[c] = halfToFloat(wp[c]) }
    case .bf16:
        let wp = p.assumingMemoryBound(to: UInt16.self)
        for c in 0..<w.cols { out[c] = Float(bitPattern: UInt32(wp[c]) << 16) }
    default:
        // Block formats: filled in by QuantFormats (issue 4).
        for c in 0..<w.cols { out[c] = .nan }
    }
}

/// IEEE 754 half -> float (handles subnormals, inf, nan).
@inline(__always)
public func halfToFloat(_ h: UInt16) -> Float {
    Float(Float16(bitPattern: h))
}
