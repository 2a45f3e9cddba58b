// Attention of one query head over cached keys/values (the decode and prefill inner loop),
// with the Swift twin the model used before the C kernel, and a streaming-read bandwidth probe
// for roofline figures. The C versions live in CKernels/ck_attention.c.
import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors of the attention kernel: sizes that do not describe a run of cached positions.
public enum AttentionKernelError: Error, CustomStringConvertible, Equatable {
    case badRun(first: Int, last: Int, capacity: Int, headDim: Int)
    case badRow(type: KVCacheType, headDim: Int, rowBytes: Int)

    public var description: String {
        switch self {
        case let .badRun(first, last, capacity, headDim):
            return "attention over positions \(first)...\(last) with a ring of \(capacity) positions and head dim \(headDim) is not possible"
        case let .badRow(type, headDim, rowBytes):
            return "a \(type) cache row of head dim \(headDim) does not fit rows \(rowBytes) bytes apart (q8_0 needs a multiple of 32)"
        }
    }
}

/// One query head's attention over positions `first...last` of a ring-buffer KV cache:
/// `scores[j] = (q . k(first + j)) * scale`, soft-capped as `softcap * tanh(s / softcap)` when
/// `softcap` is given, softmax over j, then `out = sum_j w_j v(first + j)`.
///
/// - keys, values: ring index 0 of this head; position p sits at ring index `p % capacity`,
///   consecutive ring indices `rowStride` floats apart; each row holds `headDim` floats.
/// - scores: scratch of at least `last - first + 1` floats. out: `headDim` floats.
/// - level: `.reference` runs the Swift twin (sequential f32 sums, as the model's original
///   loop); other levels run C (portable, AVX2 or AVX-512; vector sums reorder additions).
public func attentionHead(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                          headDim: Int, rowStride: Int, capacity: Int, first: Int, last: Int,
                          scale: Float, softcap: Float?, scores: UnsafeMutablePointer<Float>,
                          out: UnsafeMutablePointer<Float>, level: KernelLevel = Kernels.active) throws {
    guard headDim > 0, capacity > 0, first >= 0, last >= first, last - first + 1 <= capacity else {
        throw AttentionKernelError.badRun(first: first, last: last, capacity: capacity, headDim: headDim)
    }
    if level == .reference {
        attentionHeadReference(q: q, keys: keys, values: values, headDim: headDim, rowStride: rowStride,
                               capacity: capacity, first: first, last: last, scale: scale, softcap: softcap,
                               scores: scores, out: out)
        return
    }
    _ = ck_attention_head(level.cLevel, q, keys, values, Int64(headDim), Int64(rowStride), Int64(capacity),
                          Int64(first), Int64(last), scale, softcap ?? 0, scores, out)
}

/// `attentionHead` over cache rows stored as `kvType` (f32, f16 or q8_0), `rowBytes` bytes
/// apart: the C kernels read the stored type directly (q.k and the weighted V sum convert in
/// registers). `.reference` converts the run's rows to f32 (`KVCacheType.load`) and runs the
/// Swift twin on them, so the stored-type kernels are checked against f32 math on the same values.
public func attentionHead(q: UnsafePointer<Float>, keys: UnsafeRawPointer, values: UnsafeRawPointer, kvType: KVCacheType,
                          headDim: Int, rowBytes: Int, capacity: Int, first: Int, last: Int,
                          scale: Float, softcap: Float?, scores: UnsafeMutablePointer<Float>,
                          out: UnsafeMutablePointer<Float>, level: KernelLevel = Kernels.active) throws {
    guard headDim > 0, capacity > 0, first >= 0, last >= first, last - first + 1 <= capacity else {
        throw AttentionKernelError.badRun(first: first, last: last, capacity: capacity, headDim: headDim)
    }
    guard kvType.holds(headDim: headDim), rowBytes >= kvType.bytes(values: headDim) else {
        throw AttentionKernelError.badRow(type: kvType, headDim: headDim, rowBytes: rowBytes)
    }
    if level == .reference || FidelityProbe.exactAttention {
        // Ring indices of the run, as f32 rows in a ring of the same capacity.
        var k = [Float](repeating: 0, count: capacity * headDim), v = k
        k.withUnsafeMutableBufferPointer { kb in
            v.withUnsafeMutableBufferPointer { vb in
                for p in first...last {
                    let ring = p % capacity
                    kvType.load(keys + ring * rowBytes, count: headDim, into: kb.baseAddress! + ring * headDim)
                    kvType.load(values + ring * rowBytes, count: headDim, into: vb.baseAddress! + ring * headDim)
                }
                attentionHeadReference(q: q, keys: kb.baseAddress!, values: vb.baseAddress!, headDim: headDim, rowStride: headDim,
                                       capacity: capacity, first: first, last: last, scale: scale, softcap: softcap,
                                       scores: scores, out: out)
            }
        }
        return
    }
    _ = ck_attention_head_kv(level.cLevel, kvType.cType, q, keys, values, Int64(headDim), Int64(rowBytes), Int64(capacity),
                             Int64(first), Int64(last), scale, softcap ?? 0, scores, out)
}

/// The Swift twin of `attentionHead` (the loop GemmaShard ran before the C kernel).
public func attentionHeadReference(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                   headDim d: Int, rowStride: Int, capacity: Int, first: Int, last: Int,
                                   scale: Float, softcap: Float?, scores: UnsafeMutablePointer<Float>,
                                   out: UnsafeMutablePointer<Float>) {
    var maxScore = -Float.infinity
    for (j, p) in (first...last).enumerated() {
        let kp = keys + (p % capacity) * rowStride
        var s: Float = 0
        for x in 0..<d { s += q[x] * kp[x] }
        s *= scale
        if let cap = softcap { s = cap * tanhf(s / cap) }
        scores[j] = s
        maxScore = max(maxScore, s)
    }
    let count = last - first + 1
    var sum: Float = 0
    for j in 0..<count { scores[j] = expf(scores[j] - maxScore); sum += scores[j] }
    out.initialize(repeating: 0, count: d)
    for (j, p) in (first...last).enumerated() {
        let w = scores[j] / sum
        let vp = values + (p % capacity) * rowStride
        for x in 0..<d { out[x] += w * vp[x] }
    }
}

/// Memory read bandwidth in bytes per second: `pool`'s threads stream disjoint parts of a
/// `bytes`-sized buffer (written once first so its pages exist), best of `passes` passes.
/// Make `bytes` much larger than the last-level cache. `beforePass` runs before every timed
/// pass, after the buffer is written: ranks sharing a host pass a barrier there, so their
/// passes stream at the same time and the sum of their figures is what the host gives them
/// together (without it, one rank still writing its buffer while another timed its passes
/// made two ranks on a 2-core VM report 80 GB/s where two concurrent streams get 43-64).
public func measureReadBandwidth(bytes: Int, passes: Int = 3, pool: ThreadPool, beforePass: () throws -> Void = {}) rethrows -> Double {
    let floats = max(bytes / 4, 1024) & ~1023
    let buffer = AlignedBuffer(byteCount: floats * 4)
    // Written once so every page is its own (an untouched mapping reads the shared zero page,
    // which stays in cache and would report a bogus bandwidth).
    buffer.pointer.initializeMemory(as: UInt8.self, repeating: 1, count: floats * 4)
    let chunks = pool.threads
    let per = (floats / chunks) & ~63
    let base = UnsafeSendableBox(UnsafePointer(buffer.floats().baseAddress!))
    let sink = AlignedBuffer(byteCount: 64 * chunks)
    let sinks = UnsafeSendableBox(sink.floats().baseAddress!)
    var best = Double.infinity
    for _ in 0..<max(passes, 1) {
        try beforePass()
        let t0 = ck_now()
        pool.parallelForThreads(chunks) { start, end, _ in
            for c in start..<end { sinks.value[c * 16] = Float(ck_stream_sum(base.value + c * per, Int64(per))) }
        }
        best = min(best, ck_now() - t0)
    }
    return Double(per * chunks * 4) / best
}

/// g[i] = gelu_tanh(g[i]) * u[i] for i < count: Gemma's MLP gate. `.reference` is the Swift twin
/// `0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) * u`; C levels compute the same function as
/// z / (1 + exp(-2y)) (a vector exp on AVX2/AVX-512), within a few f32 ulps.
public func geluMul(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, count: Int, level: KernelLevel = Kernels.active) {
    if level == .reference || FidelityProbe.exactGelu {
        for i in 0..<count {
            let z = g[i]
            g[i] = 0.5 * z * (1 + tanhf(0.7978845608028654 * (z + 0.044715 * z * z * z))) * u[i]
        }
        return
    }
    ck_gelu_mul(level.cLevel, g, u, Int64(count))
}
