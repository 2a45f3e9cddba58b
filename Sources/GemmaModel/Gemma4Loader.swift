// Building one rank's shard of a Gemma 4 text decoder from any weight source (safetensors or
// GGUF, WeightSource.swift): per-layer head dims and KV heads from the plan, no k/v weights in
// KV-consumer layers (they read their producer's cache), no v_proj in k_eq_v full layers, the
// PLE table vocab-parallel, PLE gate/projection and layer scalars replicated.
import Foundation
import GemmaFormats
import GemmaKernels
import GemmaParallel

extension GemmaShard {
    /// Gemma 4's part of `build`: same plan and source, Gemma 4 tensors added.
    static func buildGemma4(config: GemmaConfig, plan: ShardPlan, source: any ModelWeightSource, comm: any Communicator,
                            options: GemmaLoadOptions, stopTokens: [Int]) throws -> GemmaShard {
        if !config.tieWordEmbeddings && !source.has(.lmHead) { throw GemmaLoadError.noLMHead }
        let r = comm.rank, h = config.hiddenSize

        func matrix(_ t: LogicalTensor, rows: Range<Int>? = nil, cols: Range<Int>? = nil) throws -> WeightMatrix {
            try source.matrix(t, rows: rows, cols: cols)
        }
        /// Gemma 4 norms are stored as the multiplier itself (no + 1), in both formats.
        func norm(_ t: LogicalTensor) throws -> [Float] { try source.vector(t) }
        /// Stand-in for a projection the layer does not have (KV consumers, k_eq_v's v_proj).
        func absent() throws -> ColumnParallelLinear { ColumnParallelLinear(weight: try WeightMatrix(type: .f32, rows: 0, cols: h)) }

        // MoE: experts split by columns (every rank holds a 1/N slice of every expert: balanced
        // whatever the routing; docs/MOE.md), or whole experts per rank when the expert down
        // projection's quant blocks cannot be cut per rank; router replicated; one scratch.
        var moeDims: MoEDims?, moeShard: MoERankShard?
        let moeScratch = MoEScratch()
        if config.isMoE {
            let dims = try MoEDims(config: config)
            let block = try (0..<config.numHiddenLayers).map { try source.blockSize(.expertsDown($0)) }.max() ?? 1
            moeDims = dims
            moeShard = try MoEPlan.shards(dims: dims, ranks: comm.size, blockSize: block).shards[r]
        }
        let box = UnsafeSendableBox(source)

        var layers: [LayerWeights] = []
        for i in 0..<config.numHiddenLayers {
            let s = plan.layers[i][r]
            let d = s.headDim
            let qRows = (s.qHeads.lowerBound * d)..<(s.qHeads.upperBound * d)
            let kvRows = (s.kvHeads.lowerBound * d)..<(s.kvHeads.upperBound * d)
            let ownKV = config.hasOwnKV(i), ownV = config.hasVProj(i)
            let scalar = try source.vector(.layerScalar(i))
            guard scalar.count == 1 else { throw TensorTableError.wrongShape(name: "layers.\(i).layer_scalar", expected: [1], got: [scalar.count]) }
            var ple: PLELayerWeights?
            if config.perLayerInputSize > 0 {
                ple = PLELayerWeights(gate: try matrix(.perLayerInputGate(i)), projection: try matrix(.perLayerProjection(i)),
                                      postNorm: try norm(.postPerLayerInputNorm(i)))
            }
            var moe: MoEBlock?
            if let moeDims, let moeShard {
                // The 3-D expert tensors are read as their 2-D views ([E·2Ie, H], [E·H, Ie]).
                let reader = MoETensorReader(
                    matrix: { t, rows, cols in try box.value.matrix(Self.logical(t, layer: i), rows: rows, cols: cols) },
                    floats: { t in try box.value.vector(Self.logical(t, layer: i)) })
                moe = try MoEBlock.load(dims: moeDims, shard: moeShard, read: reader, scratch: moeScratch)
            }
            layers.append(LayerWeights(
                type: config.layerTypes[i], shard: s,
                inputNorm: try norm(.inputNorm(i)),
                postAttentionNorm: try norm(.postAttentionNorm(i)),
                preFeedforwardNorm: try norm(.preFeedforwardNorm(i)),
                postFeedforwardNorm: try norm(.postFeedforwardNorm(i)),
                qNorm: try norm(.qNorm(i)),
                kNorm: ownKV ? try norm(.kNorm(i)) : [],
                q: ColumnParallelLinear(weight: try matrix(.qProj(i), rows: qRows)),
                k: ownKV ? ColumnParallelLinear(weight: try matrix(.kProj(i), rows: kvRows)) : try absent(),
                v: ownV ? ColumnParallelLinear(weight: try matrix(.vProj(i), rows: kvRows)) : try absent(),
                o: RowParallelLinear(weight: try matrix(.oProj(i), cols: qRows)),
                gate: ColumnParallelLinear(weight: try matrix(.gateProj(i), rows: s.mlpColumns)),
                up: ColumnParallelLinear(weight: try matrix(.upProj(i), rows: s.mlpColumns)),
                down: RowParallelLinear(weight: try matrix(.downProj(i), cols: s.mlpColumns)),
                kvSource: ownKV ? nil : config.kvSourceLayer(i),
                hasVProj: ownV,
                layerScalar: scalar[0],
                ple: ple,
                moe: moe,
                postFeedforwardNorm1: moe == nil ? [] : try norm(.postFeedforwardNorm1(i)),
                postFeedforwardNorm2: moe == nil ? [] : try norm(.postFeedforwardNorm2(i))))
        }
        var ple: PLEWeights?
        if config.perLayerInputSize > 0 {
            let rows = try ShardPlan.partition(config.perLayerVocabSize, ranks: comm.size, dimension: "vocab_size_per_layer_input",
                                               unit: 1, uneven: true)[r]
            ple = PLEWeights(table: VocabParallelEmbedding(weight: try matrix(.perLayerEmbedding, rows: rows), vocabRange: rows),
                             modelProjection: try matrix(.perLayerModelProjection),
                             projectionNorm: try norm(.perLayerProjectionNorm),
                             vocabSize: config.perLayerVocabSize)
        }
        return try assemble(config: config, plan: plan, source: source, comm: comm, options: options, layers: layers,
                            ple: ple, finalNorm: try norm(.finalNorm), stopTokens: stopTokens)
    }

    /// The checkpoint tensor behind a MoE loader request.
    static func logical(_ t: MoETensor, layer i: Int) -> LogicalTensor {
        switch t {
        case .routerProj: return .routerProj(i)
        case .routerScale: return .routerScale(i)
        case .perExpertScale: return .routerPerExpertScale(i)
        case .gateUp: return .expertsGateUp(i)
        case .down: return .expertsDown(i)
        case .preNorm2: return .preFeedforwardNorm2(i)
        }
    }

    /// Bytes of the Gemma 4 weights `weightBytes` does not list (PLE table share, PLE
    /// projections, layer scalars).
    var gemma4ExtraWeightBytes: Int {
        var total = 0
        if let ple { total += ple.table.weight.byteCount + ple.modelProjection.byteCount + 4 * ple.projectionNorm.count }
        for l in layers {
            if let p = l.ple { total += p.gate.byteCount + p.projection.byteCount + 4 * p.postNorm.count }
            if config.hasLayerScalar { total += 4 }
            if let m = l.moe { total += m.expertBytes + m.replicatedBytes + 4 * (l.postFeedforwardNorm1.count + l.postFeedforwardNorm2.count) }
        }
        return total
    }
}
