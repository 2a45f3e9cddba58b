// Where a rank's weights come from, independent of the file format: a Hugging Face
// safetensors directory or a GGUF file. The loader asks for logical tensors (TensorTable.swift)
// and slices; each source checks its file against the same table rows (by their Hugging Face or
// GGUF names), and hands back kernel-ready matrices in the stored encoding (or quantized on
// load, safetensors only). GGUF metadata -> config: GGUFMetadata.swift.
import Foundation
import GemmaFormats
import GemmaKernels

/// A checkpoint as the loader sees it.
protocol ModelWeightSource {
    /// File or directory, for messages.
    var path: String { get }
    /// Whether the checkpoint holds `t` (lm_head is optional: absent means tied).
    func has(_ t: LogicalTensor) -> Bool
    /// Rows `rows` and columns `cols` of a 2-D tensor ([out, in] as in PyTorch).
    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix
    /// A 1-D tensor (norm weights) as stored, converted to f32.
    func vector(_ t: LogicalTensor) throws -> [Float]
    /// Values per quantization block along the input axis of `t` as it will be held in memory
    /// (1 for float types): a row-parallel split of `t` must cut at multiples of it.
    func blockSize(_ t: LogicalTensor) throws -> Int
    /// The encoding `matrix` returns `t` in (stored, or the `--quant` target).
    func storedType(_ t: LogicalTensor) throws -> WeightType
}

/// A Hugging Face directory: config.json + safetensors (one file or sharded with an index).
final class SafetensorsWeightSource: ModelWeightSource {
    let path: String
    let archive: SafetensorsArchive
    let names: [LogicalTensor: String]
    /// nil keeps the stored dtype; q8_0 / q4_0 / f16 / bf16 / f32 re-encode 2-D weights on load.
    let quantize: WeightType?

    init(directory: URL, config: GemmaConfig, quantize: WeightType?) throws {
        path = directory.path
        archive = try SafetensorsArchive(directory: directory)
        names = try TensorTable.resolve(config: config, names: archive.tensors.mapValues(\.shape))
        self.quantize = quantize
    }

    func has(_ t: LogicalTensor) -> Bool { names[t] != nil }

    private func name(_ t: LogicalTensor) throws -> String {
        guard let n = names[t] else { throw TensorTableError.missing("\(t)") }
        return n
    }

    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix {
        let n = try name(t)
        let info = try archive.info(n)
        let rr = rows ?? 0..<info.rows, cc = cols ?? 0..<info.cols
        defer { archive.evict(n) }
        guard let target = quantize, target != info.dtype.weightType else {
            let m = try WeightMatrix(type: info.dtype.weightType, rows: rr.count, cols: cc.count)
            try archive.copySlice(n, rows: rr, cols: cc, into: m.storage.pointer)
            return m
        }
        guard cc.count % target.blockSize == 0 else {
            throw ModelLoadError.cannotQuantize(tensor: n, type: target.description, columns: cc.count, blockSize: target.blockSize)
        }
        // Row by row so the f32 staging buffer stays one row wide.
        let m = try WeightMatrix(type: target, rows: rr.count, cols: cc.count)
        var row = [Float](repeating: 0, count: cc.count)
        for (i, r) in rr.enumerated() {
            row = try archive.floats(n, rows: r..<(r + 1), cols: cc)
            try row.withUnsafeBufferPointer { buf in
                guard let base = buf.baseAddress else { return }
                try GemmaKernels.quantize(target, base, count: cc.count, into: m.storage.pointer + i * m.rowBytes)
            }
        }
        return m
    }

    func vector(_ t: LogicalTensor) throws -> [Float] { try archive.floats(try name(t)) }

    func blockSize(_ t: LogicalTensor) throws -> Int {
        _ = try name(t)
        return quantize?.blockSize ?? 1
    }

    func storedType(_ t: LogicalTensor) throws -> WeightType {
        try quantize ?? archive.info(try name(t)).dtype.weightType
    }
}

/// A GGUF file as a weight source: rank slices are read from the file (pread) in the stored
/// encoding (split on block boundaries), so no source page enters the rank's resident set.
final class GGUFWeightSource: ModelWeightSource {
    let file: GGUFFile
    var path: String { file.path }
    let tensors: [LogicalTensor: GGUFTensorInfo]

    /// Checks every tensor against the table for `config`: missing, unexpected, wrongly shaped
    /// or of a type this program cannot read are errors naming the file and the tensor.
    init(file: GGUFFile, config: GemmaConfig) throws {
        self.file = file
        var found: [LogicalTensor: GGUFTensorInfo] = [:]
        var unclaimed = Set(file.tensors.map(\.name))
        for spec in TensorTable.specs(for: config) {
            let name = spec.ggufName
            switch spec.presence {
            case .absent: continue
            case .ignored:
                unclaimed.remove(name)
                continue
            case .optional:
                if !file.hasTensor(name) { continue }
            case .required:
                break
            }
            guard let info = try? file.tensor(name) else {
                throw ModelLoadError.badMetadata(file: file.path, reason: "tensor \(name) (\(spec.name)) is missing")
            }
            let shape = Array(info.dims.reversed())
            let expected = spec.shape
            guard shape == expected else {
                throw ModelLoadError.badMetadata(file: file.path, reason: "tensor \(name) has shape \(shape), expected \(expected) (\(spec.name))")
            }
            _ = try file.weightType(of: info)
            guard info.rowByteCount != nil else {
                throw ModelLoadError.badMetadata(file: file.path, reason: "tensor \(name): rows of \(info.columns) values are not whole \(info.type?.description ?? "?") blocks")
            }
            found[spec.tensor] = info
            unclaimed.remove(name)
        }
        if let extra = unclaimed.sorted().first {
            throw ModelLoadError.badMetadata(file: file.path, reason: "unexpected tensor \(extra) (not part of a \(config.generation.rawValue) text decoder)")
        }
        tensors = found
    }

    private func info(_ t: LogicalTensor) throws -> GGUFTensorInfo {
        guard let i = tensors[t] else { throw ModelLoadError.badMetadata(file: path, reason: "no tensor for \(t)") }
        return i
    }

    func has(_ t: LogicalTensor) -> Bool { tensors[t] != nil }

    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix {
        let i = try info(t)
        return try file.weightMatrix(of: i, rows: rows, columns: cols)
    }

    func vector(_ t: LogicalTensor) throws -> [Float] {
        let i = try info(t)
        let type = try file.weightType(of: i)
        let bytes = try file.columnBytes(of: i, rows: 0..<i.rows, columns: 0..<i.columns)
        var out = [Float](repeating: 0, count: i.elementCount)
        bytes.withUnsafeBytes { raw in
            guard let src = raw.baseAddress else { return }
            out.withUnsafeMutableBufferPointer { buf in
                if let p = buf.baseAddress { dequantize(type, src, count: i.elementCount, into: p) }
            }
        }
        return out
    }

    func blockSize(_ t: LogicalTensor) throws -> Int { try file.weightType(of: try info(t)).blockSize }

    func storedType(_ t: LogicalTensor) throws -> WeightType { try file.weightType(of: try info(t)) }

    /// Ids that end generation: EOS, the end-of-turn id if the file names one, and the id of
    /// `<end_of_turn>` (llama.cpp treats it as end of generation for Gemma).
    func stopTokenIds(config: GemmaConfig) -> [Int] {
        var ids = config.eosTokenIds
        if let eot = file.value("tokenizer.ggml.eot_token_id")?.intValue { ids.append(eot) }
        // Found in the file's bytes: decoding the vocabulary here would cost every rank ~37 MiB.
        if let i = file.firstIndex(of: "<end_of_turn>", inStringArray: "tokenizer.ggml.tokens") {
            ids.append(i)
        }
        var seen = Set<Int>()
        return ids.filter { seen.insert($0).inserted }
    }
}

/// Load errors that are not the formats' own.
public enum ModelLoadError: Error, CustomStringConvertible, Equatable {
    case cannotQuantize(tensor: String, type: String, columns: Int, blockSize: Int)
    case quantizeNeedsSafetensors(String)
    case unsupportedQuantizeType(String)
    case headsCutBlocks(layer: Int, tensor: String, blockSize: Int, columns: Range<Int>, ranks: Int)
    case unsupportedArchitecture(file: String, architecture: String)
    case badMetadata(file: String, reason: String)
    case notAModel(String)

    public var description: String {
        switch self {
        case let .cannotQuantize(t, ty, c, b):
            return "cannot quantize \(t) to \(ty): its \(c) input columns (per rank) are not a whole number of \(b)-value blocks"
        case let .quantizeNeedsSafetensors(p):
            return "--quant applies to safetensors weights only; \(p) is a GGUF file whose tensors are already encoded"
        case let .unsupportedQuantizeType(t):
            return "--quant \(t) is not supported (use q8_0, q4_0, f16, bf16 or f32)"
        case let .headsCutBlocks(l, t, b, c, r):
            return "cannot split \(t) of layer \(l) across \(r) ranks: one rank's attention heads are its input columns \(c.lowerBound)..<\(c.upperBound), which cut its quantization blocks of \(b) values"
        case let .unsupportedArchitecture(f, a):
            return "\(f): general.architecture \"\(a)\" is not supported (expected one of \(GemmaConfig.ggufArchitectures.joined(separator: ", ")))"
        case let .badMetadata(f, r): return "\(f): \(r)"
        case let .notAModel(p):
            return "\(p) is neither a GGUF file nor a Hugging Face model directory (config.json + *.safetensors)"
        }
    }
}
