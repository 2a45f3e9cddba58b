// How the KV cache stores keys and values (`--kv-type`). The planner (ShardReport, inspect)
// and the cache itself size their buffers from `bytes(values:)`, so the two cannot disagree.
// The row conversions and the attention kernel that reads these rows are C (ck_attention.c).
import CKernels

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

    /// The GGML type id of the stored rows (F32 0, F16 1, Q8_0 8), as the C kernels take it.
    var cType: Int32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 8
        }
    }

    /// True when a row of `headDim` values is a whole number of blocks.
    public func holds(headDim: Int) -> Bool { headDim > 0 && headDim % blockSize == 0 }

    /// Stores `count` floats as one row of this type at `row` (`bytes(values: count)` bytes):
    /// f16 rounds to nearest even, saturating at +-65504; q8_0 takes d = f16(max|x| / 127) per
    /// block of 32 and q = round(x / d), so every value is within d/2 of x.
    public func store(_ x: UnsafePointer<Float>, count: Int, into row: UnsafeMutableRawPointer) {
        precondition(holds(headDim: count), "\(self) row of \(count) values")
        _ = ck_kv_store(cType, x, Int64(count), row)
    }

    /// Reads one row of `count` values back as floats.
    public func load(_ row: UnsafeRawPointer, count: Int, into x: UnsafeMutablePointer<Float>) {
        precondition(holds(headDim: count), "\(self) row of \(count) values")
        _ = ck_kv_load(cType, row, Int64(count), x)
    }
}
