// The per-layer element-wise operations of a Gemma decoder layer: RMSNorm, rotate-half RoPE,
// soft-capping, residual add and scaling (the tanh GELU is `geluMul` in Attention.swift, with
// its SIMD path; the final-logit soft-cap runs over a whole vocabulary per token and has one
// too, `ck_softcap`). They are O(tokens x hidden) per layer, a few % of a prefill next to the matrix
// products, so each is a plain loop (the reference and the only implementation) that never
// reorders float sums; rmsNorm interleaves four rows' sums and scales eight lanes at a time,
// which keeps every rounding of the plain loop (LayerOpsTests checks the bits). GemmaShard
// splits them over the thread pool by rows for a prefill. Tests compare each with a float64
// evaluation of the formula (LayerOpsTests).
import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// y = x / sqrt(mean(x²) + eps) ⊙ weight, for `rows` rows of `width` values; `weight` nil is
/// the unweighted norm (Gemma 4 v_norm). `y` may be `x` (in place).
/// Four rows' sums of squares run in one loop: each is still one sequential sum in index order
/// (the same float operations as a row alone, so the same bits), but the four independent
/// chains overlap in the pipeline instead of each add waiting for the previous one's latency,
/// which made this loop ~5% of a 1-thread prefill.
public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, width n: Int, weight: UnsafePointer<Float>?,
                    eps: Float, into y: UnsafeMutablePointer<Float>) {
    // y = x * inv * w, eight lanes at a time (the same two roundings per element as the
    // scalar tail; the compiler kept this loop scalar, as y may alias x or w).
    @inline(__always) func scaleRow(_ xr: UnsafePointer<Float>, _ yr: UnsafeMutablePointer<Float>, _ ss: Float) {
        let inv = 1 / (ss / Float(n) + eps).squareRoot()
        var i = 0
        if let w = weight {
            while i + 8 <= n {
                let xv = UnsafeRawPointer(xr + i).loadUnaligned(as: SIMD8<Float>.self)
                let wv = UnsafeRawPointer(w + i).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(yr + i).storeBytes(of: xv * inv * wv, as: SIMD8<Float>.self)
                i += 8
            }
            while i < n { yr[i] = xr[i] * inv * w[i]; i += 1 }
        } else {
            while i + 8 <= n {
                let xv = UnsafeRawPointer(xr + i).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(yr + i).storeBytes(of: xv * inv, as: SIMD8<Float>.self)
                i += 8
            }
            while i < n { yr[i] = xr[i] * inv; i += 1 }
        }
    }
    var r = 0
    while r + 4 <= rows {
        let x0 = x + r * n, x1 = x0 + n, x2 = x1 + n, x3 = x2 + n
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
        for i in 0..<n {
            s0 += x0[i] * x0[i]
            s1 += x1[i] * x1[i]
            s2 += x2[i] * x2[i]
            s3 += x3[i] * x3[i]
        }
        // All four sums are taken before any row is written (y may be x).
        scaleRow(x0, y + r * n, s0)
        scaleRow(x1, y + (r + 1) * n, s1)
        scaleRow(x2, y + (r + 2) * n, s2)
        scaleRow(x3, y + (r + 3) * n, s3)
        r += 4
    }
    while r < rows {
        let xr = x + r * n
        var ss: Float = 0
        for i in 0..<n { ss += xr[i] * xr[i] }
        scaleRow(xr, y + r * n, ss)
        r += 1
    }
}

/// Rotate-half RoPE in place on [tokens, heads, headDim]: dimension j pairs with j + headDim/2,
/// rotated by the angle whose cosine and sine are cos/sin[token, j] ([tokens, headDim/2]).
public func applyRope(_ p: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                      tokens t: Int, heads: Int, headDim d: Int) {
    let half = d / 2
    for i in 0..<t {
        let c = cos + i * half, s = sin + i * half
        for hd in 0..<heads {
            let v = p + (i * heads + hd) * d
            for j in 0..<half {
                let a = v[j], b = v[j + half]
                v[j] = a * c[j] - b * s[j]
                v[j + half] = b * c[j] + a * s[j]
            }
        }
    }
}

/// cos/sin [tokens, headDim/2] of `positions[i] * inverseFrequencies[j]`: the table `applyRope` reads.
public func ropeTable(positions: [Int], inverseFrequencies inv: [Float], cos: UnsafeMutablePointer<Float>,
                      sin: UnsafeMutablePointer<Float>) {
    let half = inv.count
    for (i, position) in positions.enumerated() {
        for j in 0..<half {
            let angle = Float(position) * inv[j]
            cos[i * half + j] = cosf(angle)
            sin[i * half + j] = sinf(angle)
        }
    }
}

/// v = cap · tanh(v / cap): Gemma 2's and Gemma 4's final-logit soft-capping, over every
/// vocabulary row a step keeps (262,144 values per token for Gemma 4: libm's tanhf there took
/// ~2% of a 26B-A4B decode step). `.reference` is the Swift twin; C levels compute
/// 2 / (1 + exp(-2x)) - 1 with a vector exp, within cap · 6e-7 absolute (LayerOpsTests).
public func softcap(_ v: UnsafeMutableBufferPointer<Float>, cap: Float, level: KernelLevel = Kernels.active) {
    if level == .reference {
        for j in v.indices { v[j] = cap * tanhf(v[j] / cap) }
        return
    }
    guard let base = v.baseAddress else { return }
    ck_softcap(level.cLevel, base, Int64(v.count), cap)
}

/// x += b: the residual connection.
public func addResidual(_ b: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { x[i] += b[i] }
}

/// x *= s.
public func scale(_ x: UnsafeMutablePointer<Float>, by s: Float, count: Int) {
    for i in 0..<count { x[i] *= s }
}
