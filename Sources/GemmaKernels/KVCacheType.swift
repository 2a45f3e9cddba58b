// How the KV cache stores keys and values (`--kv-type`). The planner (ShardReport, inspect)
// and the cache itself size their buffers from `bytes(values:)`, so the two cannot disagree.

/// Element type of cached keys and values.
public enum KVCacheType: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// 4 bytes per value: exact.
    case f32
    /// IEEE half, 2 bytes per value (llama.cpp's default cache type).
    case f16
    /// Blocks of 32 int8 values with one f16 scale: 34 bytes per 32 values.
    case q8_0

    public var description: String { rawValue }

    /// Values per storage block (the head dimension must be a multiple of it).
    public var blockSize: Int { self == .q8_0 ? 32 : 1 }
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .q8_0: return 34
        }
    }

    /// Bytes holding `values` values (a multiple of `blockSize`).
    public func bytes(values: Int) -> Int { values / blockSize * bytesPerBlock }
}
