// Writes GGUF files (version 3, little-endian): header, metadata key/values of every GGUF
// value type (arrays of strings for a vocabulary included), tensor infos, padding to
// `general.alignment`, then the tensor data, each tensor at an aligned offset. The writer lays
// the file out first (`layout()`), so tensor data can be produced in any order and written in
// chunks at its final offset (`GGUFFileSink`) without holding a whole tensor in memory.
// It writes what it is given: which tensors and keys make a model is the caller's business.
import Foundation

/// Errors of writing a GGUF file.
public enum GGUFWriteError: Error, CustomStringConvertible, Equatable {
    case duplicateKey(String)
    case duplicateTensor(String)
    case badValue(key: String, reason: String)
    case badTensor(name: String, reason: String)
    case badAlignment(Int)
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case let .duplicateKey(k): return "metadata key \(k) is given twice"
        case let .duplicateTensor(t): return "tensor \(t) is given twice"
        case let .badValue(k, r): return "metadata \(k): \(r)"
        case let .badTensor(n, r): return "tensor \(n): \(r)"
        case let .badAlignment(a): return "alignment \(a) is not a positive power of two"
        case let .io(p, r): return "cannot write \(p): \(r)"
        }
    }
}

/// One tensor to write: its GGUF dims (innermost first, as stored), GGML type id and the
/// number of data bytes.
public struct GGUFTensorEntry: Sendable, Equatable {
    public let name: String
    public let dims: [Int]
    public let typeID: UInt32
    public let byteCount: Int

    public init(name: String, dims: [Int], typeID: UInt32, byteCount: Int) {
        self.name = name
        self.dims = dims
        self.typeID = typeID
        self.byteCount = byteCount
    }
}

/// A GGUF file's content before the tensor data: metadata and tensor list.
public struct GGUFWriter: Sendable {
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    public private(set) var tensors: [GGUFTensorEntry] = []
    private var keys: Set<String> = []
    private var tensorNames: Set<String> = []

    /// Data alignment: `general.alignment` when that key was added (u32), else 32.
    public var alignment: Int {
        if let v = metadata.first(where: { $0.key == "general.alignment" })?.value.intValue { return v }
        return 32
    }

    public init() {}

    /// Adds a metadata entry (file order is insertion order).
    public mutating func add(_ key: String, _ value: GGUFValue) throws {
        guard !keys.contains(key) else { throw GGUFWriteError.duplicateKey(key) }
        if case let .array(type, values) = value, let bad = values.first(where: { $0.type != type }) {
            throw GGUFWriteError.badValue(key: key, reason: "array of \(type) holds a \(bad.type) element")
        }
        if key == "general.alignment" {
            guard case let .uint32(a) = value, a > 0, a & (a - 1) == 0 else { throw GGUFWriteError.badAlignment(value.intValue ?? -1) }
        }
        metadata.append((key, value))
        keys.insert(key)
    }

    /// Adds a tensor (file order is insertion order). Dims are GGUF order: innermost first.
    public mutating func addTensor(_ t: GGUFTensorEntry) throws {
        guard !tensorNames.contains(t.name) else { throw GGUFWriteError.duplicateTensor(t.name) }
        guard (1...4).contains(t.dims.count), t.dims.allSatisfy({ $0 > 0 }) else {
            throw GGUFWriteError.badTensor(name: t.name, reason: "dims \(t.dims) must be 1 to 4 positive sizes")
        }
        if let (bs, bpb) = ggmlBlockSizes[t.typeID] {
            let cols = t.dims[0], rows = t.dims.dropFirst().reduce(1, *)
            guard cols % bs == 0 else {
                throw GGUFWriteError.badTensor(name: t.name, reason: "\(cols) values per row are not a whole number of blocks of \(bs)")
            }
            guard cols / bs * bpb * rows == t.byteCount else {
                throw GGUFWriteError.badTensor(name: t.name, reason: "\(t.byteCount) bytes given, the type and dims need \(cols / bs * bpb * rows)")
            }
        }
        tensors.append(t)
        tensorNames.insert(t.name)
    }

    /// Where everything goes: the header bytes (padded to the alignment), each tensor's
    /// absolute file offset, and the file size.
    public func layout() -> (header: [UInt8], tensorOffsets: [Int], fileSize: Int) {
        let align = alignment
        func aligned(_ n: Int) -> Int { (n + align - 1) / align * align }
        var relative: [Int] = []
        var cursor = 0
        for t in tensors {
            relative.append(cursor)
            cursor = aligned(cursor + t.byteCount)
        }
        var out = ByteWriter()
        out.u32(0x4655_4747)   // "GGUF"
        out.u32(3)
        out.u64(UInt64(tensors.count))
        out.u64(UInt64(metadata.count))
        for (key, value) in metadata {
            out.string(key)
            out.u32(value.type.rawValue)
            out.value(value)
        }
        for (t, off) in zip(tensors, relative) {
            out.string(t.name)
            out.u32(UInt32(t.dims.count))
            for d in t.dims { out.u64(UInt64(d)) }
            out.u32(t.typeID)
            out.u64(UInt64(off))
        }
        let start = aligned(out.bytes.count)
        out.bytes += [UInt8](repeating: 0, count: start - out.bytes.count)
        // The last tensor is not padded after its data (as gguf-py writes it).
        let end = tensors.isEmpty ? start : start + relative[relative.count - 1] + tensors[tensors.count - 1].byteCount
        return (out.bytes, relative.map { start + $0 }, end)
    }

    /// Writes the whole file from in-memory tensor data (one buffer per tensor, in order).
    public func write(to path: String, data: [[UInt8]]) throws {
        guard data.count == tensors.count else {
            throw GGUFWriteError.io(path: path, reason: "\(data.count) data buffers for \(tensors.count) tensors")
        }
        let sink = try GGUFFileSink(path: path, writer: self)
        for (i, bytes) in data.enumerated() {
            guard bytes.count == tensors[i].byteCount else {
                throw GGUFWriteError.badTensor(name: tensors[i].name, reason: "\(bytes.count) bytes given, \(tensors[i].byteCount) declared")
            }
            try bytes.withUnsafeBytes { try sink.write(tensor: i, at: 0, $0) }
        }
        try sink.close()
    }
}

/// An open GGUF file being written: the header is written at open and the file sized to its
/// final length; tensor bytes are then written at their offsets with pwrite, in any order.
public final class GGUFFileSink {
    public let path: String
    public let tensorOffsets: [Int]
    public let fileSize: Int
    private let byteCounts: [Int]
    private var fd: Int32

    /// Creates (or truncates) `path` and writes the header of `writer`.
    public init(path: String, writer: GGUFWriter) throws {
        self.path = path
        let (header, offsets, size) = writer.layout()
        tensorOffsets = offsets
        fileSize = size
        byteCounts = writer.tensors.map(\.byteCount)
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw GGUFWriteError.io(path: path, reason: String(cString: strerror(errno))) }
        do {
            // Sized up front: padding between tensors reads back as zeros without being written.
            guard ftruncate(fd, off_t(size)) == 0 else { throw GGUFWriteError.io(path: path, reason: String(cString: strerror(errno))) }
            try header.withUnsafeBytes { try writeAll($0, at: 0) }
        } catch {
            _ = closeDescriptor(fd)
            fd = -1
            throw error
        }
    }

    deinit { if fd >= 0 { _ = closeDescriptor(fd) } }

    /// Writes `bytes` into tensor `index` starting `offset` bytes into its data.
    public func write(tensor index: Int, at offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        guard tensorOffsets.indices.contains(index), offset >= 0, offset + bytes.count <= byteCounts[index] else {
            throw GGUFWriteError.io(path: path, reason: "write of \(bytes.count) bytes at \(offset) is outside tensor #\(index)")
        }
        try writeAll(bytes, at: tensorOffsets[index] + offset)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        guard fd >= 0 else { throw GGUFWriteError.io(path: path, reason: "file is closed") }
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw GGUFWriteError.io(path: path, reason: String(cString: strerror(errno)))
            }
            done += n
        }
    }

    /// Closes the file (reporting a failed close, e.g. a full disk on some file systems).
    public func close() throws {
        guard fd >= 0 else { return }
        let r = closeDescriptor(fd)
        fd = -1
        if r != 0 { throw GGUFWriteError.io(path: path, reason: String(cString: strerror(errno))) }
    }
}

/// close(2), reachable from inside `GGUFFileSink` (whose own `close()` hides the C function).
private func closeDescriptor(_ fd: Int32) -> Int32 { close(fd) }

/// Little-endian serialisation of GGUF values.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func raw<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }
    mutating func u32(_ v: UInt32) { raw(v) }
    mutating func u64(_ v: UInt64) { raw(v) }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u64(UInt64(utf8.count))
        bytes += utf8
    }

    mutating func value(_ v: GGUFValue) {
        switch v {
        case let .uint8(x): raw(x)
        case let .int8(x): raw(x)
        case let .uint16(x): raw(x)
        case let .int16(x): raw(x)
        case let .uint32(x): raw(x)
        case let .int32(x): raw(x)
        case let .uint64(x): raw(x)
        case let .int64(x): raw(x)
        case let .float32(x): raw(x.bitPattern)
        case let .float64(x): raw(x.bitPattern)
        case let .bool(x): bytes.append(x ? 1 : 0)
        case let .string(s): string(s)
        case let .array(type, values):
            u32(type.rawValue)
            u64(UInt64(values.count))
            for e in values { value(e) }
        }
    }
}
