// Reader for Hugging Face safetensors checkpoints (one file, or many listed by
// `model.safetensors.index.json`): memory-mapped, header validated against the file size, and
// sliced copies so a rank touches only the rows/columns it owns. No model semantics here.
import Foundation
import GemmaKernels

/// Element types a safetensors checkpoint of a Gemma model uses.
public enum SafetensorsDType: String, Sendable, Equatable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }
    /// The matching weight storage type (weights are kept in their stored dtype).
    public var weightType: WeightType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        }
    }
}

/// Everything that can be wrong with a safetensors checkpoint.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case badHeader(file: String, reason: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case truncated(file: String, tensor: String, needed: Int, fileSize: Int)
    case badIndex(file: String, reason: String)
    case missingTensor(String)
    case sliceOutOfRange(tensor: String, shape: [Int], rows: Range<Int>, cols: Range<Int>)

    public var description: String {
        switch self {
        case let .cannotOpen(f, r): return "cannot open \(f): \(r)"
        case let .badHeader(f, r): return "\(f): invalid safetensors header: \(r)"
        case let .unsupportedDType(f, t, d): return "\(f): tensor \(t) has dtype \(d); only F32, F16 and BF16 are supported"
        case let .truncated(f, t, n, s):
            return "\(f) is truncated: tensor \(t) needs bytes up to \(n) but the file has \(s)"
        case let .badIndex(f, r): return "\(f): invalid index: \(r)"
        case let .missingTensor(t): return "tensor \(t) is not in the checkpoint"
        case let .sliceOutOfRange(t, shape, rows, cols):
            return "slice rows \(rows) cols \(cols) is outside tensor \(t) of shape \(shape)"
        }
    }
}

/// Opens a file through the shared `MappedFile`, reporting failures as safetensors errors.
private func mapSafetensorsFile(_ path: String) throws -> MappedFile {
    do {
        return try MappedFile(path: path)
    } catch let MappedFileError.cannotOpen(file, reason) {
        throw SafetensorsError.cannotOpen(file: file, reason: reason)
    }
}

/// One tensor's entry in a header.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    /// PyTorch shape, e.g. [out, in] for a linear weight.
    public let shape: [Int]
    /// Which file of the archive holds it (index into `SafetensorsArchive.files`).
    public let fileIndex: Int
    /// Absolute byte offset of the data in that file.
    public let offset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
    /// Rows and columns when viewed as 2-D (1-D tensors are one row).
    public var rows: Int { shape.count <= 1 ? 1 : shape.dropLast().reduce(1, *) }
    public var cols: Int { shape.last ?? 1 }
}

/// A checkpoint made of one or more safetensors files, memory-mapped.
public final class SafetensorsArchive: @unchecked Sendable {
    // @unchecked: immutable after init; the mappings are read-only.
    /// File paths, in the order tensors refer to them.
    public let files: [String]
    /// Every tensor of every file, by name.
    public let tensors: [String: SafetensorsTensorInfo]
    private let regions: [MappedFile]

    /// Opens a model directory: `model.safetensors.index.json` if present (every file it
    /// names), else the single `model.safetensors`, else every `*.safetensors` file.
    public convenience init(directory: URL) throws {
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let fm = FileManager.default
        var names: [String]
        if fm.fileExists(atPath: index.path) {
            guard let data = fm.contents(atPath: index.path),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String] else {
                throw SafetensorsError.badIndex(file: index.path, reason: "no weight_map object")
            }
            names = Array(Set(map.values)).sorted()
        } else if fm.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path) {
            names = ["model.safetensors"]
        } else {
            let all = (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
            names = all.filter { $0.hasSuffix(".safetensors") }.sorted()
            if names.isEmpty {
                throw SafetensorsError.cannotOpen(file: directory.path, reason: "no .safetensors files in the directory")
            }
        }
        try self.init(files: names.map { directory.appendingPathComponent($0).path })
    }

    /// Opens the given files; a tensor name appearing in two files is an error.
    public convenience init(files: [String]) throws {
        try self.init(regions: files.map(mapSafetensorsFile))
    }

    /// Reads already mapped files (or in-memory bytes, as the fuzz harness does); each
    /// region's `path` names it in errors.
    public init(regions: [MappedFile]) throws {
        var tensors: [String: SafetensorsTensorInfo] = [:]
        for (i, region) in regions.enumerated() {
            let path = region.path
            for info in try Self.parseHeader(region, path: path, fileIndex: i) {
                if tensors[info.name] != nil {
                    throw SafetensorsError.badIndex(file: path, reason: "tensor \(info.name) appears in more than one file")
                }
                tensors[info.name] = info
            }
        }
        self.files = regions.map(\.path)
        self.tensors = tensors
        self.regions = regions
    }

    /// Header layout: u64 little-endian length N, N bytes of JSON
    /// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then data
    /// (offsets relative to the end of the header).
    static func parseHeader(_ region: MappedFile, path: String, fileIndex: Int) throws -> [SafetensorsTensorInfo] {
        guard region.size >= 8 else {
            throw SafetensorsError.badHeader(file: path, reason: "file has \(region.size) bytes, fewer than the 8-byte length")
        }
        var n: UInt64 = 0
        withUnsafeMutableBytes(of: &n) { $0.copyMemory(from: UnsafeRawBufferPointer(start: region.base, count: 8)) }
        n = UInt64(littleEndian: n)
        guard n <= UInt64(region.size - 8) else {
            throw SafetensorsError.badHeader(file: path, reason: "header length \(n) exceeds the file size \(region.size)")
        }
        let dataStart = 8 + Int(n)
        let json = Data(bytes: region.base + 8, count: Int(n))
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw SafetensorsError.badHeader(file: path, reason: "header is not a JSON object")
        }
        var out: [SafetensorsTensorInfo] = []
        for (name, value) in object where name != "__metadata__" {
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int],
                  let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw SafetensorsError.badHeader(file: path, reason: "tensor \(name) lacks dtype, shape or data_offsets")
            }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw SafetensorsError.unsupportedDType(file: path, tensor: name, dtype: dtypeName)
            }
            guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[1] >= offsets[0] else {
                throw SafetensorsError.badHeader(file: path, reason: "tensor \(name) has a negative size or offset")
            }
            let (elements, overflow) = shape.reduce((1, false)) { acc, d in
                let (m, o) = acc.0.multipliedReportingOverflow(by: d)
                return (m, acc.1 || o)
            }
            // Checked arithmetic throughout: shapes and offsets come from the file, and the
            // release build does not trap on overflow.
            let (bytes, overflow2) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, !overflow2, offsets[1] - offsets[0] == bytes else {
                throw SafetensorsError.badHeader(file: path, reason: "tensor \(name): data_offsets span \(offsets[1] - offsets[0]) bytes, shape \(shape) of \(dtypeName) needs \(bytes)")
            }
            let (end, overflow3) = dataStart.addingReportingOverflow(offsets[1])
            guard !overflow3, end <= region.size else {
                throw SafetensorsError.truncated(file: path, tensor: name, needed: overflow3 ? Int.max : end, fileSize: region.size)
            }
            out.append(SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, fileIndex: fileIndex,
                                             offset: dataStart + offsets[0], byteCount: bytes))
        }
        // Tensors partly sharing bytes: a damaged header. Two names for exactly the same bytes
        // (a tied weight stored once) are allowed. Sorted by start, any overlap shows between
        // neighbours.
        let extents = out.filter { $0.byteCount > 0 }.sorted { ($0.offset, $0.byteCount) < ($1.offset, $1.byteCount) }
        for (a, b) in zip(extents, extents.dropFirst())
        where b.offset < a.offset + a.byteCount && (a.offset, a.byteCount) != (b.offset, b.byteCount) {
            throw SafetensorsError.badHeader(file: path, reason: "tensors \(a.name) and \(b.name) overlap")
        }
        return out
    }

    public func info(_ name: String) throws -> SafetensorsTensorInfo {
        guard let info = tensors[name] else { throw SafetensorsError.missingTensor(name) }
        return info
    }

    /// Raw bytes of a whole tensor (valid while the archive lives).
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(start: regions[info.fileIndex].base + info.offset, count: info.byteCount)
    }

    /// Copies rows `rows` and, within each, columns `cols` of a tensor viewed as 2-D
    /// [rows, cols], in its stored dtype, densely packed (`rows.count * cols.count` elements)
    /// into `destination`. The bytes are read from the file (`MappedFile.copy`: pread), so
    /// none of the source pages enter this process's resident set.
    public func copySlice(_ name: String, rows: Range<Int>, cols: Range<Int>, into destination: UnsafeMutableRawPointer) throws {
        let info = try info(name)
        guard rows.lowerBound >= 0, rows.upperBound <= info.rows, cols.lowerBound >= 0, cols.upperBound <= info.cols else {
            throw SafetensorsError.sliceOutOfRange(tensor: name, shape: info.shape, rows: rows, cols: cols)
        }
        let es = info.dtype.byteSize
        let region = regions[info.fileIndex]
        let rowBytes = info.cols * es
        let sliceRowBytes = cols.count * es
        do {
            if sliceRowBytes == rowBytes {
                try region.copy(offset: info.offset + rows.lowerBound * rowBytes, count: rows.count * rowBytes, into: destination)
                return
            }
            for (i, r) in rows.enumerated() {
                try region.copy(offset: info.offset + r * rowBytes + cols.lowerBound * es, count: sliceRowBytes,
                                into: destination + i * sliceRowBytes)
            }
        } catch let MappedFileError.cannotOpen(file, reason) {
            throw SafetensorsError.cannotOpen(file: file, reason: reason)
        }
    }

    /// Drops a tensor's pages from this process's resident memory once its slice is copied
    /// (the mapping is read-only and file-backed, so a later read simply faults them back in).
    /// Keeps a loading rank's peak near its own share of the weights instead of share + file.
    public func evict(_ name: String) {
        guard let info = tensors[name], info.byteCount > 0 else { return }
        let region = regions[info.fileIndex]
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (info.offset / page) * page
        let end = min(region.size, info.offset + info.byteCount)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: region.base + start), end - start, MADV_DONTNEED)
    }

    /// A whole tensor converted to f32 (small tensors: norms, scalars).
    public func floats(_ name: String) throws -> [Float] {
        let info = try info(name)
        return try floats(name, rows: 0..<info.rows, cols: 0..<info.cols)
    }

    /// A slice converted to f32, `rows.count * cols.count` values row-major.
    public func floats(_ name: String, rows: Range<Int>, cols: Range<Int>) throws -> [Float] {
        let info = try info(name)
        let count = rows.count * cols.count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count * info.dtype.byteSize), alignment: 16)
        defer { raw.deallocate() }
        try copySlice(name, rows: rows, cols: cols, into: raw)
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { buf in
            if let p = buf.baseAddress { dequantize(info.dtype.weightType, raw, count: count, into: p) }
        }
        return out
    }
}
