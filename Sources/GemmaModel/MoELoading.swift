// Building one rank's MoE block from a checkpoint: only the rank's experts / columns are
// read (the 3-D expert tensors are addressed as 2-D row/column slices), so a rank holds
// about 1/N of the expert weights. Works for any source that can cut a 2-D slice
// (safetensors, GGUF, in-memory arrays for tests).
import GemmaKernels

/// The checkpoint tensors of one MoE layer, with the 2-D view `MoETensorReader` slices.
public enum MoETensor: Sendable, Hashable, CustomStringConvertible {
    /// [E, H]
    case routerProj
    /// [H] (no `.weight` suffix in HF)
    case routerScale
    /// [E] (no `.weight` suffix in HF)
    case perExpertScale
    /// HF [E, 2·Ie, H] viewed as [E·2Ie, H]: expert e's gate rows are e·2Ie + (0..<Ie), its up
    /// rows e·2Ie + Ie + (0..<Ie). GGUF `ffn_gate_up_exps` (ne [H, 2Ie, E]) has the same view.
    case gateUp
    /// HF [E, H, Ie] viewed as [E·H, Ie]: expert e's rows are e·H + (0..<H).
    case down
    /// pre_feedforward_layernorm_2 [H]
    case preNorm2

    /// The name after the model prefix in a Hugging Face checkpoint (e.g. after "model.language_model.").
    public func hfName(layer i: Int) -> String {
        switch self {
        case .routerProj: return "layers.\(i).router.proj.weight"
        case .routerScale: return "layers.\(i).router.scale"
        case .perExpertScale: return "layers.\(i).router.per_expert_scale"
        case .gateUp: return "layers.\(i).experts.gate_up_proj"
        case .down: return "layers.\(i).experts.down_proj"
        case .preNorm2: return "layers.\(i).pre_feedforward_layernorm_2.weight"
        }
    }

    public var description: String { hfName(layer: 0).replacingOccurrences(of: "layers.0.", with: "") }
}

/// How the MoE loader reads one layer's tensors.
public struct MoETensorReader: Sendable {
    /// Rows `rows` and columns `cols` of the tensor's 2-D view (see `MoETensor`), in its
    /// stored type; must throw when the range is outside the tensor.
    public let matrix: @Sendable (_ tensor: MoETensor, _ rows: Range<Int>, _ cols: Range<Int>) throws -> WeightMatrix
    /// A whole small tensor as f32 (router.scale, per_expert_scale, the norm).
    public let floats: @Sendable (_ tensor: MoETensor) throws -> [Float]

    public init(matrix: @escaping @Sendable (MoETensor, Range<Int>, Range<Int>) throws -> WeightMatrix,
                floats: @escaping @Sendable (MoETensor) throws -> [Float]) {
        self.matrix = matrix
        self.floats = floats
    }

    /// A reader over full f32 arrays held in memory (tests; small checkpoints already converted).
    /// `tensors[t]` is (2-D view shape [rows, cols], values row-major).
    public static func inMemory(_ tensors: [MoETensor: (shape: [Int], values: [Float])]) -> MoETensorReader {
        MoETensorReader(
            matrix: { t, rows, cols in
                guard let (shape, values) = tensors[t] else { throw MoEError.shape(tensor: "\(t)", expected: "a tensor", got: "none") }
                guard shape.count == 2, rows.lowerBound >= 0, rows.upperBound <= shape[0], cols.lowerBound >= 0, cols.upperBound <= shape[1] else {
                    throw MoEError.shape(tensor: "\(t)", expected: "a slice of \(shape)", got: "rows \(rows), cols \(cols)")
                }
                var slice: [Float] = []
                slice.reserveCapacity(rows.count * cols.count)
                for r in rows { slice.append(contentsOf: values[(r * shape[1] + cols.lowerBound)..<(r * shape[1] + cols.upperBound)]) }
                return try WeightMatrix.f32(rows: rows.count, cols: cols.count, values: slice)
            },
            floats: { t in
                guard let (_, values) = tensors[t] else { throw MoEError.shape(tensor: "\(t)", expected: "a tensor", got: "none") }
                return values
            })
    }
}

extension MoEBlock {
    /// This rank's block of one layer, reading only the slices `shard` names: for each held
    /// expert e, gate rows [a, b) and up rows [Ie + a, Ie + b) (packed into one [2·IR, H]
    /// matrix) and down columns [a, b). Router and norm are read whole (replicated).
    public static func load(dims: MoEDims, shard: MoERankShard, read: MoETensorReader, scratch: MoEScratch) throws -> MoEBlock {
        let h = dims.hidden, ie = dims.expertIntermediate
        // The router must see float weights: a block-format matmul also quantizes its input to
        // int8, and the rounding flips near-tied top-k choices against transformers (llama.cpp
        // keeps ffn_gate_inp in F32 for the same reason). A router that comes back in a block
        // format (quantize-on-load, or stored so) is replaced by its f32 values.
        var proj = try read.matrix(.routerProj, 0..<dims.experts, 0..<h)
        if proj.type.blockSize > 1 {
            let values = try read.floats(.routerProj)
            guard values.count == dims.experts * h else {
                throw MoEError.shape(tensor: "router.proj", expected: "\(dims.experts * h) values", got: "\(values.count)")
            }
            proj = try WeightMatrix.f32(rows: dims.experts, cols: h, values: values)
        }
        let router = try MoERouter(proj: proj, scale: try read.floats(.routerScale), perExpertScale: try read.floats(.perExpertScale))
        var experts: [ExpertWeights] = []
        experts.reserveCapacity(shard.experts.count)
        for e in shard.experts {
            let a = shard.columns(of: e).lowerBound, b = shard.columns(of: e).upperBound
            let gate = try read.matrix(.gateUp, (e * 2 * ie + a)..<(e * 2 * ie + b), 0..<h)
            let up = try read.matrix(.gateUp, (e * 2 * ie + ie + a)..<(e * 2 * ie + ie + b), 0..<h)
            let down = try read.matrix(.down, (e * h)..<((e + 1) * h), a..<b)
            experts.append(ExpertWeights(gateUp: try stack(gate, up, tensor: "experts.gate_up_proj[\(e)]"), down: down))
        }
        return try MoEBlock(dims: dims, shard: shard, router: router, preNorm: try read.floats(.preNorm2),
                            experts: experts, scratch: scratch)
    }

    /// The block from full f32 arrays in checkpoint layout (every rank passes the same full
    /// tensors; only `shard`'s part is kept). For tests and small models.
    public static func fromFloats(dims: MoEDims, shard: MoERankShard, routerProj: [Float], routerScale: [Float], perExpertScale: [Float],
                                  preNorm2: [Float], gateUp: [Float], down: [Float], scratch: MoEScratch) throws -> MoEBlock {
        let e = dims.experts, h = dims.hidden, ie = dims.expertIntermediate
        for (name, got, want) in [("router.proj", routerProj.count, e * h), ("experts.gate_up_proj", gateUp.count, e * 2 * ie * h),
                                  ("experts.down_proj", down.count, e * h * ie)] where got != want {
            throw MoEError.shape(tensor: name, expected: "\(want) values", got: "\(got)")
        }
        let reader = MoETensorReader.inMemory([
            .routerProj: ([e, h], routerProj), .routerScale: ([1, routerScale.count], routerScale),
            .perExpertScale: ([1, perExpertScale.count], perExpertScale), .preNorm2: ([1, preNorm2.count], preNorm2),
            .gateUp: ([e * 2 * ie, h], gateUp), .down: ([e * h, ie], down),
        ])
        return try load(dims: dims, shard: shard, read: reader, scratch: scratch)
    }

    /// Rows of `top` then rows of `bottom` in one matrix (same type and columns).
    static func stack(_ top: WeightMatrix, _ bottom: WeightMatrix, tensor: String) throws -> WeightMatrix {
        guard top.type == bottom.type, top.cols == bottom.cols else { throw MoEError.mixedTypes(tensor: tensor) }
        let m = try WeightMatrix(type: top.type, rows: top.rows + bottom.rows, cols: top.cols)
        m.storage.pointer.copyMemory(from: top.storage.pointer, byteCount: top.byteCount)
        (m.storage.pointer + top.byteCount).copyMemory(from: bottom.storage.pointer, byteCount: bottom.byteCount)
        return m
    }
}
