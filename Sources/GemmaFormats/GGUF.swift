// Reader for GGUF files (versions 2 and 3), the container llama.cpp and Ollama use: header,
// typed metadata, tensor infos and memory-mapped tensor data with row / block-aligned column
// slicing. Every count, length and offset is checked against the file size before use, so a
// truncated or corrupt file is a typed error, never a crash or a huge allocation. No model
// semantics here (names of keys and tensors are the model loader's business).
import Foundation
import GemmaKernels

/// Everything that can be wrong with a GGUF file or a request against it.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case notGGUF(file: String, reason: String)
    case unsupportedVersion(file: String, version: UInt32)
    /// The file ends (or a length points) past the end while reading `what`.
    case truncated(file: String, what: String, offset: Int, needed: Int, fileSize: Int)
    case corrupt(file: String, reason: String)
    case missingKey(file: String, key: String)
    case wrongType(file: String, key: String, expected: String, found: String)
    case missingTensor(file: String, tensor: String)
    case unknownTensorType(file: String, tensor: String, typeID: UInt32)
    case sliceOutOfRange(file: String, tensor: String, reason: String)
    /// A column range whose ends are not on quantization-block boundaries.
    case splitCutsBlock(file: String, tensor: String, type: String, blockSize: Int, columns: Range<Int>)

    public var description: String {
        switch self {
        case let .notGGUF(f, r): return "\(f) is not a GGUF file: \(r)"
        case let .unsupportedVersion(f, v): return "\(f): GGUF version \(v) is not supported (only 2 and 3)"
        case let .truncated(f, w, o, n, s):
            return "\(f) is truncated or corrupt: reading \(w) needs bytes \(o)..<\(o &+ n) but the file has \(s) bytes"
        case let .corrupt(f, r): return "\(f) is corrupt: \(r)"
        case let .missingKey(f, k): return "\(f): metadata key \(k) is missing"
        case let .wrongType(f, k, e, found): return "\(f): metadata key \(k) is \(found), expected \(e)"
        case let .missingTensor(f, t): return "\(f): tensor \(t) is not in the file"
        case let .unknownTensorType(f, t, id):
            return "\(f): tensor \(t) has GGML type id \(id), which this program cannot read (supported: \(WeightType.allCases.map { "\($0)" }.joined(separator: ", ")))"
        case let .sliceOutOfRange(f, t, r): return "\(f): tensor \(t): \(r)"
        case let .splitCutsBlock(f, t, ty, bs, c):
            return "\(f): tensor \(t) (\(ty), \(bs) values per block) cannot be split at columns \(c.lowerBound)..<\(c.upperBound): both ends must be multiples of \(bs) (or the row end)"
        }
    }
}

/// GGUF metadata value types (the numbering of the file format).
public enum GGUFValueType: UInt32, Sendable, CustomStringConvertible {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6
    case bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    public var description: String {
        switch self {
        case .uint8: return "u8"
        case .int8: return "i8"
        case .uint16: return "u16"
        case .int16: return "i16"
        case .uint32: return "u32"
        case .int32: return "i32"
        case .float32: return "f32"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        case .uint64: return "u64"
        case .int64: return "i64"
        case .float64: return "f64"
        }
    }

    /// Smallest encoded size of one value (strings and arrays: their length prefix), used to
    /// reject element counts that cannot fit in the rest of the file before allocating.
    var minimumSize: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64, .string: return 8
        case .array: return 12
        }
    }
}

/// One metadata value.
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    /// Elements all of `elementType` (arrays may nest).
    case array(elementType: GGUFValueType, values: [GGUFValue])

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// The value as an integer if it is one of the integer types and fits in `Int`.
    public var intValue: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return v <= UInt64(Int.max) ? Int(v) : nil
        case let .int64(v): return Int(v)
        default: return nil
        }
    }

    /// The value as a floating-point number if it is numeric (integers convert).
    public var doubleValue: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        default: return intValue.map(Double.init)
        }
    }

    public var description: String {
        switch self {
        case let .string(s): return "\"\(s)\""
        case let .array(t, v):
            let head = v.prefix(8).map(\.description).joined(separator: ", ")
            return "[\(t) × \(v.count)] [\(head)\(v.count > 8 ? ", …" : "")]"
        case let .bool(b): return b ? "true" : "false"
        case let .float32(x): return "\(x)"
        case let .float64(x): return "\(x)"
        // Printed from the stored integer itself: a u64 above Int.max has no intValue (and
        // "\(self)" here would call this property again, recursing until the stack ran out).
        case let .uint64(v): return "\(v)"
        default: return intValue.map { "\($0)" } ?? "?"
        }
    }

    var typeName: String {
        if case let .array(t, _) = self { return "array of \(t)" }
        return type.description
    }
}

/// A metadata array of scalars or strings left in the file: where its elements start.
struct FlatArray: Sendable {
    let elementType: GGUFValueType
    let count: Int
    /// Absolute file offset of the first element.
    let offset: Int
}

/// A metadata entry as kept by `GGUFFile`.
enum MetadataEntry: Sendable {
    case value(GGUFValue)
    case array(FlatArray)

    var typeName: String {
        switch self {
        case let .value(v): return v.typeName
        case let .array(a): return "array of \(a.elementType)"
        }
    }
}

/// One tensor's entry in the GGUF header.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// GGML dimensions, fastest-varying first: an HF `[out, in]` matrix is `[in, out]` here.
    public let dims: [Int]
    /// The raw GGML type id (see `weightType()`).
    public let typeID: UInt32
    /// Offset of the data relative to the file's data section.
    public let offset: Int

    /// The storage type, or nil for a type this program cannot read.
    public var type: WeightType? { WeightType(rawValue: typeID) }
    public var elementCount: Int { dims.reduce(1, *) }
    /// Values per row (`dims[0]`): the axis quant blocks run along.
    public var columns: Int { dims.first ?? 1 }
    /// Rows when viewed as 2-D `[rows, columns]` (every dim after the first multiplied).
    public var rows: Int { dims.dropFirst().reduce(1, *) }
    /// Bytes of one row, or nil for an unknown type / a row that is not whole blocks.
    public var rowByteCount: Int? { type?.rowBytes(columns) }
    /// Bytes of the whole tensor, or nil when `rowByteCount` is nil.
    public var byteCount: Int? { rowByteCount.map { $0 * rows } }
}

/// A parsed, memory-mapped GGUF file.
public final class GGUFFile: @unchecked Sendable {
    // @unchecked: immutable after init; the mapping is read-only.
    /// Path (or name, for in-memory bytes) used in error messages.
    public var path: String { file.path }
    public let file: MappedFile
    /// Format version (2 or 3).
    public let version: UInt32
    /// Every metadata entry, by key. Arrays are decoded from the file on each call (see
    /// `entries`): prefer `value(_:)` and the typed accessors.
    public var metadata: [String: GGUFValue] {
        var all: [String: GGUFValue] = [:]
        for key in metadataKeys { all[key] = value(key) }
        return all
    }
    /// Scalars and strings decoded at open; arrays of scalars or strings stay in the file and
    /// are only located and checked at open. A Gemma vocabulary is three arrays of 262144
    /// entries: decoded as `GGUFValue`s they are ~786K heap objects (~37 MiB) in every rank,
    /// though only rank 0's tokenizer reads them, once, as typed arrays.
    private let entries: [String: MetadataEntry]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    private let tensorIndex: [String: Int]
    /// `general.alignment` (default 32): data section start and tensor offsets are multiples of it.
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataStart: Int

    /// Opens and validates the file at `path`.
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Parses `file` (a mapped file or in-memory bytes).
    public init(file: MappedFile) throws {
        self.file = file
        var r = Reader(file: file)
        let name = file.path
        guard file.size >= 4 else { throw GGUFError.notGGUF(file: name, reason: "only \(file.size) bytes") }
        let magic = try r.u32("magic")
        guard magic == 0x4655_4747 else {
            throw GGUFError.notGGUF(file: name, reason: String(format: "magic is 0x%08x, expected 0x46554747 (\"GGUF\")", magic))
        }
        version = try r.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(file: name, version: version) }
        let nTensors = try r.count("tensor count", minimumEach: 8 + 4 + 4 + 8)
        let nKV = try r.count("metadata count", minimumEach: 8 + 4 + 1)

        var metadata: [String: MetadataEntry] = [:]
        var keys: [String] = []
        keys.reserveCapacity(nKV)
        for i in 0..<nKV {
            let key = try r.string("metadata key #\(i)")
            let rawType = try r.u32("type of metadata \(key)")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.corrupt(file: name, reason: "metadata \(key) has unknown value type \(rawType)")
            }
            let entry: MetadataEntry
            if type == .array, let lazy = try r.flatArray(key: key) {
                entry = .array(lazy)
            } else {
                entry = .value(try r.value(type, key: key, depth: 0))
            }
            if metadata.updateValue(entry, forKey: key) != nil {
                throw GGUFError.corrupt(file: name, reason: "metadata key \(key) appears twice")
            }
            keys.append(key)
        }

        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard case let .value(.uint32(v)) = a else {
                throw GGUFError.wrongType(file: name, key: "general.alignment", expected: "u32", found: a.typeName)
            }
            guard v > 0, v & (v - 1) == 0 else {
                throw GGUFError.corrupt(file: name, reason: "general.alignment is \(v), not a power of two")
            }
            alignment = Int(v)
        }

        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(nTensors)
        var index: [String: Int] = [:]
        for i in 0..<nTensors {
            let tname = try r.string("name of tensor #\(i)")
            let nDims = try r.u32("dimension count of tensor \(tname)")
            // GGML_MAX_DIMS is 4.
            guard (1...4).contains(nDims) else {
                throw GGUFError.corrupt(file: name, reason: "tensor \(tname) has \(nDims) dimensions (1 to 4 allowed)")
            }
            var dims: [Int] = []
            var elements = 1
            for d in 0..<Int(nDims) {
                let v = try r.u64("dimension \(d) of tensor \(tname)")
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(clamping: v))
                guard v <= UInt64(Int32.max) * 1024, !overflow else {
                    throw GGUFError.corrupt(file: name, reason: "tensor \(tname) has an impossible dimension \(v)")
                }
                elements = product
                dims.append(Int(v))
            }
            let typeID = try r.u32("type of tensor \(tname)")
            let off = try r.u64("data offset of tensor \(tname)")
            guard off <= UInt64(file.size) else {
                throw GGUFError.corrupt(file: name, reason: "tensor \(tname) data offset \(off) is beyond the file size \(file.size)")
            }
            guard Int(off) % alignment == 0 else {
                throw GGUFError.corrupt(file: name, reason: "tensor \(tname) data offset \(off) is not a multiple of the alignment \(alignment)")
            }
            if index.updateValue(tensors.count, forKey: tname) != nil {
                throw GGUFError.corrupt(file: name, reason: "tensor \(tname) appears twice")
            }
            tensors.append(GGUFTensorInfo(name: tname, dims: dims, typeID: typeID, offset: Int(off)))
        }
        let start = (r.offset + alignment - 1) / alignment * alignment
        // A file with tensors must contain its (padded) data section start.
        if nTensors > 0, start > file.size {
            throw GGUFError.truncated(file: name, what: "padding before the tensor data", offset: r.offset, needed: start - r.offset, fileSize: file.size)
        }
        // Every tensor's extent is checked now (the common case: a truncated download), using
        // GGML's block sizes even for types the kernels cannot read: such a type is an error
        // only when the tensor is used, since a file may hold tensors this program never reads.
        var extents: [(begin: Int, end: Int, name: String)] = []
        for t in tensors {
            guard let (bs, bpb) = ggmlBlockSizes[t.typeID] else { continue }
            guard t.columns % bs == 0 else {
                throw GGUFError.corrupt(file: name, reason: "tensor \(t.name) has \(t.columns) values per row, not a multiple of its type's block size \(bs)")
            }
            let rb = t.columns / bs * bpb
            let (bytes, o1) = rb.multipliedReportingOverflow(by: t.rows)
            let (end, o2) = (start + t.offset).addingReportingOverflow(bytes)
            guard !o1, !o2, end <= file.size else {
                throw GGUFError.truncated(file: name, what: "data of tensor \(t.name) (type \(t.typeID), dims \(t.dims))", offset: start + t.offset, needed: o1 ? Int.max : bytes, fileSize: file.size)
            }
            if bytes > 0 { extents.append((start + t.offset, end, t.name)) }
        }
        // Two tensors partly sharing bytes means a damaged tensor table (llama.cpp's writer lays
        // them out one after another). Two names for exactly the same bytes (a tied weight
        // written once) are allowed. Sorted by start, any overlap shows between neighbours.
        extents.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(extents, extents.dropFirst()) where b.begin < a.end && (a.begin, a.end) != (b.begin, b.end) {
            throw GGUFError.corrupt(file: name, reason: "tensors \(a.name) and \(b.name) overlap (bytes \(a.begin)..<\(a.end) and \(b.begin)..<\(b.end))")
        }
        self.entries = metadata
        self.metadataKeys = keys
        self.tensors = tensors
        self.tensorIndex = index
        self.alignment = alignment
        self.dataStart = start
        // Everything needed from the header is decoded or located; its pages (6 MB for a
        // Gemma vocabulary) need not stay resident.
        file.dropResidency(offset: 0, count: min(start, file.size))
    }

    // MARK: Metadata accessors

    /// The raw value of `key`, or nil. An array is decoded from the file on every call.
    public func value(_ key: String) -> GGUFValue? {
        switch entries[key] {
        case nil: return nil
        case let .value(v)?: return v
        case let .array(a)?:
            // Checked at open: decoding cannot fail unless the file changed underneath.
            guard let values = try? decode(a, { r, t in try r.value(t, key: key, depth: 1) }) else { return nil }
            return .array(elementType: a.elementType, values: values)
        }
    }

    private func required(_ key: String) throws -> GGUFValue {
        guard let v = value(key) else { throw GGUFError.missingKey(file: path, key: key) }
        return v
    }

    /// The elements of a located array, each read by `element` from a cursor at its start.
    private func decode<T>(_ a: FlatArray, _ element: (inout Reader, GGUFValueType) throws -> T) throws -> [T] {
        var r = Reader(file: file)
        r.offset = a.offset
        var out: [T] = []
        out.reserveCapacity(a.count)
        // The array's pages are only needed for this decode: dropped as it goes (every MiB).
        var walked = a.offset
        for _ in 0..<a.count {
            out.append(try element(&r, a.elementType))
            if r.offset - walked >= 1 << 20 {
                file.dropResidency(offset: walked, count: r.offset - walked)
                walked = r.offset
            }
        }
        file.dropResidency(offset: walked, count: r.offset - walked)
        return out
    }

    /// The located array `key`, or the error a typed accessor reports for it.
    private func flatArray(_ key: String, expected: String) throws -> FlatArray? {
        switch entries[key] {
        case nil: throw GGUFError.missingKey(file: path, key: key)
        case let .array(a)?: return a
        case let .value(v)?:
            if case .array = v { return nil }   // nested arrays stay decoded
            throw GGUFError.wrongType(file: path, key: key, expected: expected, found: v.typeName)
        }
    }

    /// The index of the first element equal to `string` in the string array `key`, or nil
    /// (also when `key` is missing or not an array of strings). Compares bytes in the file:
    /// nothing is decoded, so a worker can find a special token without the vocabulary.
    public func firstIndex(of string: String, inStringArray key: String) -> Int? {
        guard case let .array(a)? = entries[key], a.elementType == .string else { return nil }
        let wanted = Array(string.utf8)
        var r = Reader(file: file)
        r.offset = a.offset
        var walked = a.offset
        defer { file.dropResidency(offset: walked, count: r.offset - walked) }
        for i in 0..<a.count {
            guard let bytes = try? r.stringBytes("element") else { return nil }
            if bytes.count == wanted.count, bytes.elementsEqual(wanted) { return i }
            if r.offset - walked >= 1 << 20 {
                file.dropResidency(offset: walked, count: r.offset - walked)
                walked = r.offset
            }
        }
        return nil
    }

    /// A string value.
    public func string(_ key: String) throws -> String {
        let v = try required(key)
        guard case let .string(s) = v else { throw GGUFError.wrongType(file: path, key: key, expected: "string", found: v.typeName) }
        return s
    }

    /// Any integer value that fits in `Int`.
    public func int(_ key: String) throws -> Int {
        let v = try required(key)
        guard let i = v.intValue else { throw GGUFError.wrongType(file: path, key: key, expected: "integer", found: v.typeName) }
        return i
    }

    /// Any numeric value (f32, f64 or an integer).
    public func float(_ key: String) throws -> Double {
        let v = try required(key)
        guard let d = v.doubleValue else { throw GGUFError.wrongType(file: path, key: key, expected: "number", found: v.typeName) }
        return d
    }

    /// A bool value.
    public func bool(_ key: String) throws -> Bool {
        let v = try required(key)
        guard case let .bool(b) = v else { throw GGUFError.wrongType(file: path, key: key, expected: "bool", found: v.typeName) }
        return b
    }

    private func array(_ key: String) throws -> (GGUFValueType, [GGUFValue]) {
        let v = try required(key)
        guard case let .array(t, values) = v else { throw GGUFError.wrongType(file: path, key: key, expected: "array", found: v.typeName) }
        return (t, values)
    }

    /// An array of strings.
    public func stringArray(_ key: String) throws -> [String] {
        if let a = try flatArray(key, expected: "array") {
            guard a.elementType == .string else { throw GGUFError.wrongType(file: path, key: key, expected: "array of string", found: "array of \(a.elementType)") }
            return try decode(a) { r, _ in try r.string("element of \(key)") }
        }
        let (t, values) = try array(key)
        guard t == .string else { throw GGUFError.wrongType(file: path, key: key, expected: "array of string", found: "array of \(t)") }
        return values.map { if case let .string(s) = $0 { return s } else { return "" } }
    }

    /// An array of integers (any integer element type).
    public func intArray(_ key: String) throws -> [Int] {
        if let a = try flatArray(key, expected: "array") {
            let wrong = GGUFError.wrongType(file: path, key: key, expected: "array of integers", found: "array of \(a.elementType)")
            return try decode(a) { r, t in
                guard let i = try r.value(t, key: key, depth: 1).intValue else { throw wrong }
                return i
            }
        }
        let (t, values) = try array(key)
        let ints = values.compactMap(\.intValue)
        guard ints.count == values.count else { throw GGUFError.wrongType(file: path, key: key, expected: "array of integers", found: "array of \(t)") }
        return ints
    }

    /// An array of numbers (floats or integers) as `Float`.
    public func floatArray(_ key: String) throws -> [Float] {
        if let a = try flatArray(key, expected: "array") {
            let wrong = GGUFError.wrongType(file: path, key: key, expected: "array of numbers", found: "array of \(a.elementType)")
            return try decode(a) { r, t in
                guard let d = try r.value(t, key: key, depth: 1).doubleValue else { throw wrong }
                return Float(d)
            }
        }
        let (t, values) = try array(key)
        let fs = values.compactMap { $0.doubleValue.map(Float.init) }
        guard fs.count == values.count else { throw GGUFError.wrongType(file: path, key: key, expected: "array of numbers", found: "array of \(t)") }
        return fs
    }

    /// An array of bools.
    public func boolArray(_ key: String) throws -> [Bool] {
        if let a = try flatArray(key, expected: "array") {
            guard a.elementType == .bool else { throw GGUFError.wrongType(file: path, key: key, expected: "array of bool", found: "array of \(a.elementType)") }
            return try decode(a) { r, _ in try r.u8("element of \(key)") == 1 }
        }
        let (t, values) = try array(key)
        let bs = values.compactMap { if case let .bool(b) = $0 { return b } else { return nil } }
        guard bs.count == values.count else { throw GGUFError.wrongType(file: path, key: key, expected: "array of bool", found: "array of \(t)") }
        return bs
    }

    // MARK: Tensor data

    /// The info of tensor `name`.
    public func tensor(_ name: String) throws -> GGUFTensorInfo {
        guard let i = tensorIndex[name] else { throw GGUFError.missingTensor(file: path, tensor: name) }
        return tensors[i]
    }

    /// Whether the file holds tensor `name`.
    public func hasTensor(_ name: String) -> Bool { tensorIndex[name] != nil }

    /// The storage type of `tensor`; an unknown type id is an error naming the tensor.
    public func weightType(of tensor: GGUFTensorInfo) throws -> WeightType {
        guard let t = tensor.type else { throw GGUFError.unknownTensorType(file: path, tensor: tensor.name, typeID: tensor.typeID) }
        return t
    }

    /// All bytes of `tensor` (row-major `[rows][columns]` in its storage encoding).
    public func data(of tensor: GGUFTensorInfo) throws -> UnsafeRawBufferPointer {
        try rowBytes(of: tensor, rows: 0..<tensor.rows)
    }

    /// The contiguous bytes of rows `rows` of `tensor` (viewed as `[rows, columns]`).
    public func rowBytes(of tensor: GGUFTensorInfo, rows: Range<Int>) throws -> UnsafeRawBufferPointer {
        let type = try weightType(of: tensor)
        guard rows.lowerBound >= 0, rows.upperBound <= tensor.rows else {
            throw GGUFError.sliceOutOfRange(file: path, tensor: tensor.name, reason: "rows \(rows.lowerBound)..<\(rows.upperBound) outside 0..<\(tensor.rows)")
        }
        guard let rb = type.rowBytes(tensor.columns) else {
            throw GGUFError.splitCutsBlock(file: path, tensor: tensor.name, type: type.description, blockSize: type.blockSize, columns: 0..<tensor.columns)
        }
        return try file.bytes(at: dataStart + tensor.offset + rows.lowerBound * rb, count: rows.count * rb)
    }

    /// Copies columns `columns` of rows `rows` of `tensor` into `destination` (densely:
    /// `rows.count` rows of `columns.count` values each, in the storage encoding) and returns
    /// the bytes written. Both column ends must fall on quant-block boundaries (the row end is
    /// always allowed); a split that would cut a block is refused with the reason.
    @discardableResult
    public func copyColumns(of tensor: GGUFTensorInfo, rows: Range<Int>, columns: Range<Int>,
                            into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        let type = try weightType(of: tensor)
        guard columns.lowerBound >= 0, columns.upperBound <= tensor.columns else {
            throw GGUFError.sliceOutOfRange(file: path, tensor: tensor.name, reason: "columns \(columns.lowerBound)..<\(columns.upperBound) outside 0..<\(tensor.columns)")
        }
        let bs = type.blockSize
        guard columns.lowerBound % bs == 0, columns.upperBound % bs == 0 || columns.upperBound == tensor.columns,
              let rowBytes = type.rowBytes(tensor.columns), let sliceBytes = type.rowBytes(columns.count) else {
            throw GGUFError.splitCutsBlock(file: path, tensor: tensor.name, type: type.description, blockSize: bs, columns: columns)
        }
        let src = try self.rowBytes(of: tensor, rows: rows)
        let total = sliceBytes * rows.count
        guard destination.count >= total, let dst = destination.baseAddress else {
            if total == 0 { return 0 }
            throw GGUFError.sliceOutOfRange(file: path, tensor: tensor.name, reason: "destination holds \(destination.count) bytes, the slice needs \(total)")
        }
        // Read from the file (pread), not through the mapping: see `MappedFile.copy`.
        let start = src.baseAddress.map { $0 - file.base } ?? 0
        if sliceBytes == rowBytes {
            try file.copy(offset: start, count: total, into: dst)
            return total
        }
        let skip = columns.lowerBound / bs * type.bytesPerBlock
        for r in 0..<rows.count {
            try file.copy(offset: start + r * rowBytes + skip, count: sliceBytes, into: dst + r * sliceBytes)
        }
        return total
    }

    /// Rows `rows`, columns `columns` of `tensor` copied into a kernel-ready `WeightMatrix`
    /// (`[rows.count, columns.count]`, storage type kept, 64-byte aligned): a rank's shard.
    /// Column ends must be block-aligned (see `copyColumns`).
    public func weightMatrix(of tensor: GGUFTensorInfo, rows: Range<Int>? = nil, columns: Range<Int>? = nil) throws -> WeightMatrix {
        let type = try weightType(of: tensor)
        let r = rows ?? 0..<tensor.rows, c = columns ?? 0..<tensor.columns
        guard c.lowerBound >= 0, c.upperBound <= tensor.columns, r.lowerBound >= 0, r.upperBound <= tensor.rows else {
            throw GGUFError.sliceOutOfRange(file: path, tensor: tensor.name, reason: "rows \(r.lowerBound)..<\(r.upperBound), columns \(c.lowerBound)..<\(c.upperBound) outside [\(tensor.rows), \(tensor.columns)]")
        }
        guard c.lowerBound % type.blockSize == 0, type.rowBytes(c.count) != nil else {
            throw GGUFError.splitCutsBlock(file: path, tensor: tensor.name, type: type.description, blockSize: type.blockSize, columns: c)
        }
        let m = try WeightMatrix(type: type, rows: r.count, cols: c.count)
        try copyColumns(of: tensor, rows: r, columns: c,
                        into: UnsafeMutableRawBufferPointer(start: m.storage.pointer, count: m.byteCount))
        return m
    }

    /// Columns `columns` of rows `rows` of `tensor` as a new array (see `copyColumns`).
    public func columnBytes(of tensor: GGUFTensorInfo, rows: Range<Int>, columns: Range<Int>) throws -> [UInt8] {
        let type = try weightType(of: tensor)
        // Validate before sizing the result so a bad range is the error, not the allocation.
        guard columns.lowerBound >= 0, columns.upperBound <= tensor.columns, rows.lowerBound >= 0, rows.upperBound <= tensor.rows else {
            throw GGUFError.sliceOutOfRange(file: path, tensor: tensor.name, reason: "rows \(rows.lowerBound)..<\(rows.upperBound), columns \(columns.lowerBound)..<\(columns.upperBound) outside [\(tensor.rows), \(tensor.columns)]")
        }
        let per = type.rowBytes(columns.count) ?? 0
        var out = [UInt8](repeating: 0, count: per * rows.count)
        try out.withUnsafeMutableBytes { _ = try copyColumns(of: tensor, rows: rows, columns: columns, into: $0) }
        return out
    }
}

/// (values per block, bytes per block) of every GGML type id (gguf 0.19.0 `GGML_QUANT_SIZES`),
/// used to check that each tensor lies inside the file (and, writing, that its size fits its dims).
let ggmlBlockSizes: [UInt32: (Int, Int)] = [
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
]

/// Bounds-checked little-endian cursor over the file.
private struct Reader {
    let file: MappedFile
    var offset = 0

    init(file: MappedFile) { self.file = file }

    private mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawPointer {
        guard n >= 0, n <= file.size - offset else {
            throw GGUFError.truncated(file: file.path, what: what(), offset: offset, needed: n, fileSize: file.size)
        }
        let p = file.base + offset
        offset += n
        return p
    }

    mutating func u8(_ what: @autoclosure () -> String) throws -> UInt8 { try take(1, what()).load(as: UInt8.self) }
    mutating func u16(_ what: @autoclosure () -> String) throws -> UInt16 { UInt16(littleEndian: try take(2, what()).loadUnaligned(as: UInt16.self)) }
    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { UInt32(littleEndian: try take(4, what()).loadUnaligned(as: UInt32.self)) }
    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { UInt64(littleEndian: try take(8, what()).loadUnaligned(as: UInt64.self)) }

    /// A u64 element count, refused when that many elements of at least `minimumEach`
    /// bytes cannot fit in the rest of the file (so a bogus count never drives an allocation).
    mutating func count(_ what: @autoclosure () -> String, minimumEach: Int) throws -> Int {
        let start = offset
        let n = try u64(what())
        let remaining = UInt64(file.size - offset)
        guard n <= remaining / UInt64(max(minimumEach, 1)) else {
            throw GGUFError.truncated(file: file.path, what: "\(what()) (\(n) elements)", offset: start, needed: Int(clamping: n.multipliedReportingOverflow(by: UInt64(minimumEach)).overflow ? UInt64.max : n * UInt64(minimumEach)), fileSize: file.size)
        }
        return Int(n)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        // Invalid UTF-8 is repaired (U+FFFD) rather than refused, as gguf-py decodes leniently.
        String(decoding: try stringBytes(what()), as: UTF8.self)
    }

    /// A string's bytes in the file (length-checked, not decoded).
    mutating func stringBytes(_ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        let start = offset
        let n = try u64("length of \(what())")
        guard n <= UInt64(file.size - offset) else {
            throw GGUFError.truncated(file: file.path, what: what(), offset: start + 8, needed: Int(clamping: n), fileSize: file.size)
        }
        let p = try take(Int(n), what())
        return UnsafeRawBufferPointer(start: p, count: Int(n))
    }

    /// After an array's value type: locates an array of scalars or strings and moves past it,
    /// with the checks `value` makes on every element (same errors) but nothing decoded.
    /// Returns nil, having read nothing, for an array of arrays (decoded by `value`).
    mutating func flatArray(key: String) throws -> FlatArray? {
        let start = offset
        let rawType = try u32("element type of metadata \(key)")
        guard let elementType = GGUFValueType(rawValue: rawType) else {
            throw GGUFError.corrupt(file: file.path, reason: "metadata \(key): unknown array element type \(rawType)")
        }
        if elementType == .array {
            offset = start
            return nil
        }
        let n = try count("metadata \(key) array", minimumEach: elementType.minimumSize)
        let first = offset
        switch elementType {
        case .string:
            // A vocabulary's strings are megabytes of header: pages already walked are dropped
            // every MiB, so opening a file (again, e.g. for a report) never holds them all.
            var walked = first
            for _ in 0..<n {
                _ = try stringBytes("metadata \(key)")
                if offset - walked >= 1 << 20 {
                    file.dropResidency(offset: walked, count: offset - walked)
                    walked = offset
                }
            }
        case .bool:
            for _ in 0..<n {
                let b = try u8(key)
                guard b <= 1 else { throw GGUFError.corrupt(file: file.path, reason: "metadata \(key): bool byte is \(b)") }
            }
        default:
            // Fixed size: `count` already checked that n elements fit in the file.
            _ = try take(n * elementType.minimumSize, key)
        }
        return FlatArray(elementType: elementType, count: n, offset: first)
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try u8(key))
        case .int8: return .int8(Int8(bitPattern: try u8(key)))
        case .uint16: return .uint16(try u16(key))
        case .int16: return .int16(Int16(bitPattern: try u16(key)))
        case .uint32: return .uint32(try u32(key))
        case .int32: return .int32(Int32(bitPattern: try u32(key)))
        case .uint64: return .uint64(try u64(key))
        case .int64: return .int64(Int64(bitPattern: try u64(key)))
        case .float32: return .float32(Float(bitPattern: try u32(key)))
        case .float64: return .float64(Double(bitPattern: try u64(key)))
        case .bool:
            let b = try u8(key)
            guard b <= 1 else { throw GGUFError.corrupt(file: file.path, reason: "metadata \(key): bool byte is \(b)") }
            return .bool(b == 1)
        case .string: return .string(try string("metadata \(key)"))
        case .array:
            // Nesting deeper than a few levels never occurs in real files; the limit bounds recursion.
            guard depth < 8 else { throw GGUFError.corrupt(file: file.path, reason: "metadata \(key): arrays nested deeper than 8") }
            let rawType = try u32("element type of metadata \(key)")
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.corrupt(file: file.path, reason: "metadata \(key): unknown array element type \(rawType)")
            }
            let n = try count("metadata \(key) array", minimumEach: elementType.minimumSize)
            var values: [GGUFValue] = []
            values.reserveCapacity(n)
            for _ in 0..<n { values.append(try value(elementType, key: key, depth: depth + 1)) }
            return .array(elementType: elementType, values: values)
        }
    }
}
