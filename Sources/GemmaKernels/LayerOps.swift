// The per-layer element-wise operations of a Gemma decoder layer: RMSNorm, rotate-half RoPE,
// soft-capping, residual add and scaling (the tanh GELU is `geluMul` in Attention.swift, with
// its SIMD path). They are O(tokens x hidden) per layer, well under 1% of a step next to the
// matrix products (docs/KERNELS.md), so each is one plain loop: the loop is the reference and
// the only implementation, and the compiler vectorises what it may without reordering float
// sums. Tests compare each with a float64 evaluation of the formula (LayerOpsTests).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// y = x / sqrt(mean(x²) + eps) ⊙ weight, for `rows` rows of `width` values; `weight` nil is
/// the unweighted norm (Gemma 4 v_norm). `y` may be `x` (in place).
public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, width n: Int, weight: UnsafePointer<Float>?,
                    eps: Float, into y: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let xr = x + r * n, yr = y + r * n
        var ss: Float = 0
        for i in 0..<n { ss += xr[i] * xr[i] }
        let inv = 1 / (ss / Float(n) + eps).squareRoot()
        if let w = weight {
            for i in 0..<n { yr[i] = xr[i] * inv * w[i] }
        } else {
            for i in 0..<n { yr[i] = xr[i] * inv }
        }
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

/// v = cap · tanh(v / cap): Gemma 2's and Gemma 4's final-logit soft-capping.
public func softcap(_ v: UnsafeMutableBufferPointer<Float>, cap: Float) {
    for j in v.indices { v[j] = cap * tanhf(v[j] / cap) }
}

/// x += b: the residual connection.
public func addResidual(_ b: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { x[i] += b[i] }
}

/// x *= s.
public func scale(_ x: UnsafeMutablePointer<Float>, by s: Float, count: Int) {
    for i in 0..<count { x[i] *= s }
}
