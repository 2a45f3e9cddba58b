// Where a rank's weights come from, independent of the file format: a Hugging Face
// safetensors directory or a GGUF file. The loader asks for logical tensors (TensorNames.swift)
// and slices; each source maps them to its own names, checks shapes, and hands back
// kernel-ready matrices in the stored encoding (or quantized on load, safetensors only).
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
        names = try TensorNames.resolve(config: config, names: archive.tensors.mapValues(\.shape))
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
