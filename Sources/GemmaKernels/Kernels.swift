// Which kernel implementation runs: the best the CPU supports by default, or one forced by
// GEMMA_NODE_KERNELS (reference|scalar|avx2|avx512|neon) or `Kernels.force`, so tests and
// debugging can compare paths.

import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Kernel implementations, from the Swift reference twin to the widest SIMD.
public enum KernelLevel: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Swift scalar twin: dequantize, f32 products, Double accumulation (no activation quantization).
    case reference
    /// Portable C: same int8 activation scheme as the SIMD paths, one element at a time.
    case scalar
    case avx2
    /// AVX-512 with VNNI (vpdpbusd) for the integer kernels, 512-bit float kernels.
    case avx512
    case neon

    var cLevel: Int32 {
        switch self {
        case .reference, .scalar: return Int32(CK_LEVEL_SCALAR)
        case .avx2: return Int32(CK_LEVEL_AVX2)
        case .avx512: return Int32(CK_LEVEL_AVX512)
        case .neon: return Int32(CK_LEVEL_NEON)
        }
    }

    init(cLevel: Int32) {
        switch cLevel {
        case Int32(CK_LEVEL_AVX2): self = .avx2
        case Int32(CK_LEVEL_AVX512): self = .avx512
        case Int32(CK_LEVEL_NEON): self = .neon
        default: self = .scalar
        }
    }

    /// True when this CPU can run the level.
    public var isSupported: Bool { self == .reference || ck_level_supported(cLevel) != 0 }

    /// True when the level has its own SIMD kernel for `type` (otherwise the scalar C kernel runs).
    public func hasKernel(for type: WeightType) -> Bool {
        ck_level_has_kernel(cLevel, type.rawValue) != 0
    }

    public var description: String { rawValue }
}

/// Process-wide kernel selection.
public enum Kernels {
    /// The widest level this CPU supports.
    public static var best: KernelLevel { KernelLevel(cLevel: ck_best_level()) }

    /// The level `matmul` uses. `GEMMA_NODE_KERNELS=reference` selects the Swift twin.
    public static var active: KernelLevel {
        if referenceForced.value { return .reference }
        return KernelLevel(cLevel: ck_active_level())
    }

    /// Forces a level for all later `matmul` calls (clamped to what the CPU supports);
    /// returns the level actually in force.
    @discardableResult
    public static func force(_ level: KernelLevel) -> KernelLevel {
        referenceForced.value = level == .reference
        if level == .reference { return .reference }
        return KernelLevel(cLevel: ck_set_active_level(level.isSupported ? level.cLevel : Int32(CK_LEVEL_AUTO)))
    }

    /// The exact mode (`--activations f32`): matrix products take f32 activations
    /// (`matmulF32Activations`) instead of int8 blocks. Set once at start-up, before any matmul.
    public static var exactActivations: Bool {
        get { exactFlag.value }
        set { exactFlag.value = newValue }
    }
    private static let exactFlag = ReferenceFlag(false)

    private static let referenceForced = ReferenceFlag(
        getenv("GEMMA_NODE_KERNELS").map { String(cString: $0).lowercased() == "reference" } ?? false)
}

/// A Bool read on every matmul and written rarely (debugging switch); benign races only.
private final class ReferenceFlag: @unchecked Sendable {
    var value: Bool
    init(_ v: Bool) { value = v }
}
