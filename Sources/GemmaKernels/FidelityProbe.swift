// An experiment switch for docs/FIDELITY.md: which ops run their exact (reference) twin while
// the rest stay on the fast kernels, to attribute the fast path's distance from f32 truth to
// one op or weight format at a time. Read once from GEMMA_NODE_EXACT_OPS, a comma-separated
// list of weight types (q5_0, q4_k, q6_k, q8_0, ...: matrix products with weights of that
// type take f32 activations, `matmulF32Activations`), `lm_head` (only the LM head's product), `attention` (the Swift
// attention twin, K/V converted to f32 first) and `gelu` (the Swift GELU twin). Unset: all fast.
// `--activations f32` (Kernels.exactActivations) gives every matrix product f32 activations.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum FidelityProbe {
    public static let variable = "GEMMA_NODE_EXACT_OPS"

    private static let items: Set<String> = {
        guard let raw = getenv(variable) else { return [] }
        return Set(String(cString: raw).lowercased().split(separator: ",").map { String($0.filter { $0 != " " }) })
    }()

    /// Matrix products with weights of `type` run the reference kernel.
    public static func exactMatmul(_ type: WeightType) -> Bool {
        !items.isEmpty && items.contains(type.description.lowercased())
    }

    public static var exactLMHead: Bool { items.contains("lm_head") }
    public static var exactAttention: Bool { items.contains("attention") }
    public static var exactGelu: Bool { items.contains("gelu") }
}
