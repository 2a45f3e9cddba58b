// Weight storage in its checkpoint format (f32, f16, bf16 or a GGML block format) and the
// matrix-times-activations entry point the model calls. The per-format dot products live
// in QuantFormats.swift (scalar twins) and CKernels (SIMD); this file only dispatches.
import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// GGML tensor type ids (as stored in GGUF files). Only the types the engine reads.
public enum WeightType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8
    case q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// Values per block (1 for plain floats).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return 32
        case .q4_K, .q5_K, .q6_K: return 256
        }
    }
    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        }
    }
    /// Bytes of one row of `count` values; nil when `count` is not a whole number of blocks.
    public func rowBytes(_ count: Int) -> Int? {
        count % blockSize == 0 ? count / blockSize * bytesPerBlock : nil
    }
    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        }
    }
}

/// Owned, 64-byte-aligned raw memory. Allocated once at load, freed when the last reference
/// goes (a weight buffer packed into a `WeightArena`: when the arena's last buffer goes).
public final class AlignedBuffer: @unchecked Sendable {
    public let byteCount: Int
    /// The bytes. Fixed, except that `WeightArena.pack` moves a loaded shard's small weight
    /// buffers once, before the shard computes anything (readers take it at every call).
    public private(set) var pointer: UnsafeMutableRawPointer
    /// Whether the buffer is its own anonymous mapping (else it came from the allocator or
    /// lives in a `WeightArena`).
    public private(set) var mapped: Bool
    /// Whether this is a weight buffer (`hugePages: true`): `WeightArena.pack` moves only those.
    public let isWeight: Bool
    /// The arena holding the bytes after `WeightArena.pack` (kept alive by every buffer in it).
    public private(set) var arena: WeightArena?

    /// Buffers this large get their own anonymous mapping: zero pages until first written, so
    /// scratch sized for the worst case (e.g. maxBatchTokens = 512 activations, ~19 MB at one
    /// rank) costs no resident memory until a step uses it, and no memset at load. Smaller
    /// buffers come from the allocator, zero-filled.
    static let mapThreshold = 256 << 10
    /// Weight buffers (`hugePages: true`) get their own mapping from this size: a loader's
    /// slices of 64-256 KiB (an expert's gate or up rows at 4 ranks, read and then stacked)
    /// otherwise came from the allocator's heap, which fragmented around them: the synthetic
    /// 26B-A4B MoE at 4 ranks peaked at 4,543 MiB per rank while loading against 4,088 with
    /// every such slice mapped (docs/LARGE_MODELS.md). Rounding to whole pages costs at most
    /// 6.25%. Each such buffer is its own mapping: the 26B-A4B MoE holds ~7,900 weight buffers
    /// per rank (two per expert and layer) against vm.max_map_count's default of 65,530, and a
    /// failed mmap falls back to the allocator. Once loaded, `WeightArena.pack` moves them (all
    /// weights below `hugePageThreshold`) into one mapping.
    public static let weightMapThreshold = 64 << 10
    /// Weight mappings this large ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`; the
    /// kernel then backs every 2 MiB-aligned range fully inside the mapping with one huge page,
    /// the unaligned ends stay 4 KiB, so resident memory does not grow). Decode streams all
    /// weights every token; from 4 KiB pages that is ~60,000 page walks per token of the default
    /// model, and the split Q8_0 LM head streamed 5-9% faster from huge pages (docs/KERNELS.md).
    /// Only weights: scratch and KV buffers are touched sparsely, where a 2 MiB fault would
    /// commit memory the 4 KiB pages leave untouched. `GEMMA_NODE_HUGEPAGES=0` turns it off.
    public static let hugePageThreshold = 4 << 20
    public static let hugePagesWanted: Bool = {
        guard let v = getenv("GEMMA_NODE_HUGEPAGES") else { return true }
        return String(cString: v) != "0"
    }()

    /// `hugePages`: a weight buffer: mapped from `weightMapThreshold` bytes, and advised to use
    /// transparent huge pages from `hugePageThreshold` (see there).
    public init(byteCount: Int, hugePages: Bool = false) {
        self.byteCount = byteCount
        self.isWeight = hugePages
        if byteCount >= (hugePages ? Self.weightMapThreshold : Self.mapThreshold),
           let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED {
            pointer = p  // page-aligned, so 64-byte aligned
            mapped = true
            #if os(Linux)
            if hugePages && byteCount >= Self.hugePageThreshold && Self.hugePagesWanted {
                _ = madvise(p, byteCount, MADV_HUGEPAGE)  // advice only: no error to handle
            }
            #endif
        } else {
            // Small, or no address space left for a mapping: an ordinary zeroed allocation.
            pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
            pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
            mapped = false
        }
    }
    deinit { release() }

    /// Frees the bytes this buffer owns (none when they live in an arena).
    private func release() {
        if arena != nil { return }
        if mapped { munmap(pointer, byteCount) } else { pointer.deallocate() }
    }

    /// Copies the bytes to `destination` inside `arena`, frees the old ones, and reads from
    /// there from now on.
    fileprivate func move(to destination: UnsafeMutableRawPointer, in arena: WeightArena) {
        destination.copyMemory(from: pointer, byteCount: byteCount)
        release()
        pointer = destination
        mapped = false
        self.arena = arena
    }

    public func floats(count: Int? = nil) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer.assumingMemoryBound(to: Float.self), count: count ?? byteCount / 4)
    }
}

/// One anonymous mapping, 2 MiB-aligned and advised to use transparent huge pages, holding a
/// loaded shard's small weight buffers side by side, in the order given (`pack`).
///
/// Weight buffers of 4 MiB and more get huge pages in their own mappings; smaller ones cannot
/// (a 2 MiB page needs a 2 MiB-aligned range inside one mapping), and those are most of a
/// layer's matrices: 68 MB of the default model's 246 MB of weights per token on 4 KiB pages,
/// ~17,000 page walks per decoded token, and the hardware prefetchers stop at the end of every
/// matrix. Packed, a rank's layer weights are one run of huge pages in reading order.
/// Moving happens once, after loading, buffer by buffer (each old copy is freed right after
/// it is copied; those below 64 KiB go back to the allocator's heap, which the loader's
/// `releaseFreeHeapMemory` returns just after), so the peak grows by about one buffer and one
/// huge page; the buffers are packed 64-byte aligned, so the 4 KiB rounding of their separate
/// mappings is gone too.
/// The mapping is unmapped when the last buffer in it goes.
public final class WeightArena: @unchecked Sendable {
    /// The whole mapping (unmapped in deinit) and where the packed bytes start (2 MiB-aligned).
    private let mapping: UnsafeMutableRawPointer
    private let mappingBytes: Int
    public let base: UnsafeMutableRawPointer
    /// Bytes packed.
    public let byteCount: Int

    private init(mapping: UnsafeMutableRawPointer, mappingBytes: Int, base: UnsafeMutableRawPointer, byteCount: Int) {
        self.mapping = mapping
        self.mappingBytes = mappingBytes
        self.base = base
        self.byteCount = byteCount
    }
    deinit { munmap(mapping, mappingBytes) }

    static let hugePageBytes = 2 << 20

    /// Whether `pack` moves `buffer`: a weight buffer below `AlignedBuffer.hugePageThreshold`
    /// (larger ones have their own huge pages), not yet packed, not empty.
    static func packs(_ buffer: AlignedBuffer) -> Bool {
        buffer.isWeight && buffer.arena == nil && buffer.byteCount > 0 && buffer.byteCount < AlignedBuffer.hugePageThreshold
    }

    /// Whether `pack` moves anything: not with `GEMMA_NODE_HUGEPAGES=0`, nor with
    /// `GEMMA_NODE_PACK_WEIGHTS=0` (this step alone, for A/B runs); Linux only (MADV_HUGEPAGE).
    public static let packingWanted: Bool = {
        #if os(Linux)
        return AlignedBuffer.hugePagesWanted && getenv("GEMMA_NODE_PACK_WEIGHTS").map({ String(cString: $0) }) != "0"
        #else
        return false
        #endif
    }()

    /// Moves the buffers that qualify (`packs`; each once, in the order given) into one new
    /// arena, back to back, each 64-byte aligned. Returns the arena; nil when nothing
    /// qualifies, packing is off (`packingWanted`) or the mapping fails (the buffers then stay
    /// where they are). Call it before any other thread reads the buffers' pointers.
    @discardableResult
    public static func pack(_ buffers: [AlignedBuffer]) -> WeightArena? {
        #if os(Linux)
        guard packingWanted else { return nil }
        var seen = Set<ObjectIdentifier>()
        var chosen: [(AlignedBuffer, Int)] = []
        var total = 0
        for b in buffers where packs(b) && seen.insert(ObjectIdentifier(b)).inserted {
            chosen.append((b, total))
            total += (b.byteCount + 63) & ~63
        }
        guard total > 0 else { return nil }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let used = (total + page - 1) / page * page
        let mappingBytes = used + hugePageBytes
        guard let m = mmap(nil, mappingBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), m != MAP_FAILED else { return nil }
        let start = (Int(bitPattern: m) + hugePageBytes - 1) & ~(hugePageBytes - 1)
        let base = UnsafeMutableRawPointer(bitPattern: start)!
        _ = madvise(base, used, MADV_HUGEPAGE)  // advice only: no error to handle
        let arena = WeightArena(mapping: m, mappingBytes: mappingBytes, base: base, byteCount: total)
        for (b, offset) in chosen { b.move(to: base + offset, in: arena) }
        return arena
        #else
        return nil
        #endif
    }
}

/// Returns the allocator's free heap memory to the kernel. Loading reads tensor slices through
/// temporary buffers; slices below `AlignedBuffer.weightMapThreshold`, and other loading
/// temporaries, come from the heap, whose freed space otherwise stays resident (before weight
/// slices of 64-256 KiB were mapped: ~450 MiB per rank after loading the synthetic 26B-A4B MoE
/// at 4 ranks, docs/LARGE_MODELS.md). The loader calls it once when a shard is built.
public func releaseFreeHeapMemory() { ck_release_free_heap() }

/// A 2-D weight `[rows, cols]` (PyTorch `[out_features, in_features]`), row-major, each
/// row `cols` values in `type`'s encoding (quant blocks run along `cols`).
public struct WeightMatrix: @unchecked Sendable {
    public let type: WeightType
    public let rows: Int
    public let cols: Int
    public let rowBytes: Int
    public let storage: AlignedBuffer
    /// How each row's bytes are arranged; `.ggml` unless `splittingQ8_0()` rearranged them.
    public private(set) var layout: WeightLayout = .ggml

    /// Allocates zeroed storage; the loader copies the rank's slice into `storage`.
    public init(type: WeightType, rows: Int, cols: Int) throws {
        guard let rb = type.rowBytes(cols) else {
            throw KernelError.notBlockAligned(type: type, count: cols)
        }
        self.type = type
        self.rows = rows
        self.cols = cols
        self.rowBytes = rb
        self.storage = AlignedBuffer(byteCount: rb * rows, hugePages: true)
    }

    public var byteCount: Int { rowBytes * rows }

    /// A Q8_0 matrix rearranged IN PLACE into the split row layout (each row's f16 scales, then
    /// its int8 quants; same bytes per row), which the decode kernel reads with half the
    /// instructions. The receiver shares the storage and must not be used afterwards. Other
    /// types, an already split matrix, or `GEMMA_NODE_Q8_SPLIT=0` return the matrix unchanged.
    /// `dequantizeRow`, `dotRow` and `matmul` accept either layout.
    public func splittingQ8_0() -> WeightMatrix {
        guard type == .q8_0, layout == .ggml, rows > 0,
              getenv("GEMMA_NODE_Q8_SPLIT").map({ String(cString: $0) }) != "0" else { return self }
        ck_q8_0_split_rows(storage.pointer, rowBytes, Int64(rows), Int64(cols), 1)
        var m = self
        m.layout = .q8_0Split
        return m
    }
    public func row(_ r: Int) -> UnsafeRawPointer { UnsafeRawPointer(storage.pointer + r * rowBytes) }

    /// Builds an f32 matrix from values (tests, small replicated tensors).
    public static func f32(rows: Int, cols: Int, values: [Float]) throws -> WeightMatrix {
        precondition(values.count == rows * cols)
        let m = try WeightMatrix(type: .f32, rows: rows, cols: cols)
        values.withUnsafeBytes { m.storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return m
    }
}

/// Row layouts of a `WeightMatrix`.
public enum WeightLayout: Sendable, Equatable {
    /// GGML's: consecutive blocks, each with its own scale(s).
    case ggml
    /// Q8_0 only: a row's cols/32 f16 scales, then its int8 quants (see `splittingQ8_0`).
    case q8_0Split
}

public enum KernelError: Error, CustomStringConvertible, Equatable {
    case notBlockAligned(type: WeightType, count: Int)
    case unsupportedType(UInt32)
    case shapeMismatch(expected: Int, got: Int)

    public var description: String {
        switch self {
        case let .notBlockAligned(type, count):
            return "\(count) values are not a whole number of \(type) blocks (\(type.blockSize) values each)"
        case let .unsupportedType(id): return "unsupported tensor type id \(id)"
        case let .shapeMismatch(expected, got): return "expected \(expected) values, got \(got)"
        }
    }
}
