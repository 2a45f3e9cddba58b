// The two operations the model needs from a weight matrix, whatever its format:
//   matmul: y[t, r] = sum_c W[r, c] * x[t, c] for a batch of token activations
//   dequantizeRow: one row of W as f32 (embedding lookups)
// matmul hands the work to the C kernels (CKernels: per-format SIMD dot products, activation
// quantization, the persistent thread pool); the Swift scalar path (`KernelLevel.reference`)
// is the twin that tests and debugging compare against.

import CKernels

/// Fixed set of worker threads for one rank's compute (`-t`): `threads - 1` persistent workers
/// plus the calling thread, woken per call through an atomic generation counter (spin, then
/// futex), with no allocation per call. One call at a time per pool (calls must not nest).
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int
    let handle: OpaquePointer

    public init(threads: Int) {
        let requested = max(1, threads)
        // ck_pool_create only fails when the process is out of memory: nothing sensible to do then.
        guard let h = ck_pool_create(Int32(requested)) else {
            preconditionFailure("cannot create a thread pool of \(requested) threads (out of memory)")
        }
        handle = h
        self.threads = Int(ck_pool_threads(h))
    }

    deinit { ck_pool_destroy(handle) }

    /// Runs `body(start, end)` over disjoint chunks covering `0..<count`: one contiguous chunk per
    /// thread (at least `minChunk` items each), the calling thread taking part.
    public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
        parallelForThreads(count, minChunk: minChunk) { start, end, _ in body(start, end) }
    }

    /// Runs `body(start, end, thread)` over chunks of `grain` items covering `0..<count`, handed
    /// out one at a time to whichever thread is free (the calling thread taking part): for work
    /// whose items cost unequal amounts (causal attention rows), where one contiguous chunk per
    /// thread would leave one thread waiting for the other.
    public func parallelForChunks(_ count: Int, grain: Int, _ body: (Int, Int, Int) -> Void) {
        guard count > 0 else { return }
        let grain = max(1, grain)
        if threads == 1 || grain >= count {
            body(0, count, 0)
            return
        }
        run(count, grain: grain, body)
    }

    /// As `parallelFor`, also passing the index (0..<threads) of the thread running the chunk,
    /// for per-thread scratch buffers.
    public func parallelForThreads(_ count: Int, minChunk: Int = 1, _ body: (Int, Int, Int) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(1, minChunk)))
        if chunks <= 1 {
            body(0, count, 0)
            return
        }
        let grain = (count + chunks - 1) / chunks
        run(count, grain: grain, body)
    }

    /// Hands `0..<count` to the C pool in chunks of `grain` items: the one bridge from a Swift
    /// closure to `ck_pool_run`'s function pointer and context, shared by both entry points.
    private func run(_ count: Int, grain: Int, _ body: (Int, Int, Int) -> Void) {
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { ctx in
                ck_pool_run(handle, { ctx, begin, end, thread in
                    let f = ctx!.assumingMemoryBound(to: ((Int, Int, Int) -> Void).self)
                    f.pointee(Int(begin), Int(end), Int(thread))
                }, ctx, Int64(count), Int64(grain))
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
/// t in 0..<tokens, r in 0..<W.rows, with the active kernel level (`Kernels.active`).
/// Block formats quantize x per block to int8 first (as llama.cpp does); the error this adds
/// is bounded in docs/KERNELS.md.
public func matmul(
    _ w: WeightMatrix,
    x: UnsafePointer<Float>, xStride: Int,
    tokens: Int,
    y: UnsafeMutablePointer<Float>, yStride: Int,
    pool: ThreadPool
) {
    let level = Kernels.active
    if level != .reference && (Kernels.exactActivations || FidelityProbe.exactMatmul(w.type)) {
        matmulF32Activations(w, x: x, xStride: xStride, tokens: tokens, y: y, yStride: yStride, pool: pool, level: level)
        return
    }
    if level != .reference, let block = FidelityProbe.simulatedActivationBlock(w.type), w.cols % block == 0 {
        let cols = w.cols
        let q = UnsafeMutablePointer<Float>.allocate(capacity: tokens * cols)
        defer { q.deallocate() }
        for t in 0..<tokens {
            simulateActivationRounding(x + t * xStride, cols: cols, block: block, into: q + t * cols)
        }
        matmulF32Activations(w, x: q, xStride: cols, tokens: tokens, y: y, yStride: yStride, pool: pool, level: level)
        return
    }
    matmul(w, x: x, xStride: xStride, tokens: tokens, y: y, yStride: yStride, pool: pool, level: level)
}

/// FidelityProbe's GEMMA_NODE_SIM_ACT: x rounded to int8 in blocks of `block` values with one
/// scale d = amax / 127 each (round half to even, clamped to +-127: ck_quantize_act's rule) and
/// expanded back to q * d. With block 32 the values are exactly those of ck_quantize_act's
/// activation blocks times their scale, for the 32-value formats and the K-quants alike (both
/// have one scale per 32 values; KernelTests). Block 256 reproduces the K-quant inputs as they
/// were before issue 20 (one scale per 256 values).
func simulateActivationRounding(_ x: UnsafePointer<Float>, cols: Int, block: Int,
                                into out: UnsafeMutablePointer<Float>) {
    var b = 0
    while b < cols {
        var amax: Float = 0
        for j in b..<(b + block) { amax = max(amax, abs(x[j])) }
        let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
        for j in b..<(b + block) {
            let r = (x[j] * id + 12582912.0) - 12582912.0
            out[j] = min(127, max(-127, r)) * d
        }
        b += block
    }
}

/// The exact mode's product (`--activations f32`): no activation rounding. Each row of W is
/// dequantized to f32 once per call (exactly as gguf-py does) and dotted with every token by
/// the F32 SIMD kernel of `level`, so the only error left is that of f32 sums, as in any f32
/// BLAS. Slower than the int8 path: every weight is expanded to 4 bytes in a per-thread row.
public func matmulF32Activations(
    _ w: WeightMatrix,
    x: UnsafePointer<Float>, xStride: Int,
    tokens: Int,
    y: UnsafeMutablePointer<Float>, yStride: Int,
    pool: ThreadPool, level: KernelLevel
) {
    let xs = UnsafeSendableBox(x)
    let ys = UnsafeSendableBox(y)
    let cols = w.cols
    let f32 = WeightType.f32.rawValue
    let c = level.cLevel
    pool.parallelFor(w.rows, minChunk: 16) { r0, r1 in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { row in
            let rp = row.baseAddress!
            for r in r0..<r1 {
                dequantizeRow(w, row: r, into: rp)
                for t in 0..<tokens {
                    ys.value[t * yStride + r] = ck_dot(c, f32, rp, xs.value + t * xStride, Int64(cols))
                }
            }
        }
    }
}

/// As `matmul(_:x:xStride:tokens:y:yStride:pool:)` with an explicit kernel level (tests, benchmarks).
public func matmul(
    _ w: WeightMatrix,
    x: UnsafePointer<Float>, xStride: Int,
    tokens: Int,
    y: UnsafeMutablePointer<Float>, yStride: Int,
    pool: ThreadPool, level: KernelLevel
) {
    if level == .reference {
        let xs = UnsafeSendableBox(x)
        let ys = UnsafeSendableBox(y)
        pool.parallelFor(w.rows, minChunk: 16) { r0, r1 in
            for t in 0..<tokens {
                let xt = xs.value + t * xStride
                let yt = ys.value + t * yStride
                for r in r0..<r1 { yt[r] = dotRow(w, row: r, x: xt) }
            }
        }
        return
    }
    if w.layout == .q8_0Split {
        let rc = ck_matmul_q8_0_split(pool.handle, level.cLevel, w.storage.pointer, w.rowBytes, Int64(w.rows), Int64(w.cols),
                                      x, Int64(xStride), Int64(tokens), y, Int64(yStride))
        // Only scratch allocation can fail (out of memory): as for ck_matmul below.
        precondition(rc == 0, "ck_matmul_q8_0_split failed (\(rc)): out of memory")
        return
    }
    let rc = ck_matmul(pool.handle, level.cLevel, w.type.rawValue, w.storage.pointer, w.rowBytes,
                       Int64(w.rows), Int64(w.cols), x, Int64(xStride), Int64(tokens), y, Int64(yStride))
    // Every WeightType has a kernel and WeightMatrix guarantees whole blocks, so a failure here
    // is a programming error or memory exhaustion, never bad input.
    precondition(rc == 0, "ck_matmul failed (\(rc)) for \(w.type) [\(w.rows), \(w.cols)]")
}

/// One row of W dotted with an f32 vector of length W.cols (scalar reference path).
@inline(__always)
public func dotRow(_ w: WeightMatrix, row r: Int, x: UnsafePointer<Float>) -> Float {
    if w.layout == .q8_0Split {
        return withGGMLRow(w, r) { referenceDot(w.type, $0, x, count: w.cols) }
    }
    return referenceDot(w.type, w.row(r), x, count: w.cols)
}

/// Row `r` of a split-layout Q8_0 matrix rebuilt in GGML block order in a temporary buffer.
func withGGMLRow<T>(_ w: WeightMatrix, _ r: Int, _ body: (UnsafeRawPointer) -> T) -> T {
    withUnsafeTemporaryAllocation(byteCount: w.rowBytes, alignment: 64) { tmp in
        tmp.baseAddress!.copyMemory(from: w.row(r), byteCount: w.rowBytes)
        ck_q8_0_split_rows(tmp.baseAddress!, w.rowBytes, 1, Int64(w.cols), 0)
        return body(UnsafeRawPointer(tmp.baseAddress!))
    }
}

/// Writes row `r` of W as W.cols floats.
public func dequantizeRow(_ w: WeightMatrix, row r: Int, into out: UnsafeMutablePointer<Float>) {
    if w.layout == .q8_0Split {
        withGGMLRow(w, r) { dequantize(w.type, $0, count: w.cols, into: out) }
        return
    }
    dequantize(w.type, w.row(r), count: w.cols, into: out)
}

/// IEEE 754 half -> float (handles subnormals, inf, nan).
@inline(__always)
public func halfToFloat(_ h: UInt16) -> Float {
    Float(Float16(bitPattern: h))
}
