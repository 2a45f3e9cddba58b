// An experiment switch for docs/FIDELITY.md: which ops run their exact (reference) twin while
// the rest stay on the fast kernels, to attribute the fast path's distance from f32 truth to
// one op or weight format at a time. Read once from GEMMA_NODE_EXACT_OPS, a comma-separated
// list of weight types (q5_0, q4_k, q6_k, q8_0, ...: matrix products with weights of that
// type take f32 activations, `matmulF32Activations`), `lm_head` (only the LM head's product), `attention` (the Swift
// attention twin, K/V converted to f32 first) and `gelu` (the Swift GELU twin). Unset: all fast.
// GEMMA_NODE_SIM_ACT simulates another activation block size (below).
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

    /// GEMMA_NODE_SIM_ACT="q4_k:32,q6_k:32" (weight type, or `all`, then a block size N):
    /// products with weights of that type get activations rounded to int8 in blocks of N
    /// values with one scale each (`simulateActivationRounding`, the rule of ck_quantize_act)
    /// and expanded back to f32 for `matmulF32Activations`. That is what an int8 kernel with
    /// an N-value activation block would compute, up to f32 summation order: a way to measure
    /// an activation layout before writing its SIMD kernels (docs/FIDELITY.md).
    public static let simVariable = "GEMMA_NODE_SIM_ACT"
    private static let simItems: [String: Int] = {
        guard let raw = getenv(simVariable) else { return [:] }
        var out: [String: Int] = [:]
        for item in String(cString: raw).lowercased().split(separator: ",") {
            let parts = item.split(separator: ":")
            if parts.count == 2, let n = Int(parts[1].filter { $0 != " " }), n > 0 {
                out[String(parts[0].filter { $0 != " " })] = n
            }
        }
        return out
    }()

    /// The simulated activation block size for products with weights of `type`, if any.
    public static func simulatedActivationBlock(_ type: WeightType) -> Int? {
        if simItems.isEmpty { return nil }
        return simItems[type.description.lowercased()] ?? simItems["all"]
    }

    public static var exactAttention: Bool { items.contains("attention") }
    public static var exactGelu: Bool { items.contains("gelu") }
}
