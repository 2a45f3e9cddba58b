// The three tensor-parallel building blocks, named for what happens to the data (vLLM):
// a column-parallel linear splits output features (no communication), a row-parallel linear
// splits input features and leaves partial sums for the caller's all-reduce, a vocab-parallel embedding splits
// vocabulary rows (lookup: owner contributes, all-reduce; LM head: local logits slice only).
// Weights arrive already sliced (the loader reads only this rank's part).
import GemmaKernels

/// y = x Wᵀ for this rank's slice of output features. W: [outPerRank, in]. No communication:
/// each rank ends with its own columns of the output.
public struct ColumnParallelLinear: Sendable {
    /// [outPerRank, in]
    public let weight: WeightMatrix
    public init(weight: WeightMatrix) { self.weight = weight }

    public var outPerRank: Int { weight.rows }

    /// x: [tokens, in] (stride xStride), y: [tokens, outPerRank] (stride yStride).
    public func callAsFunction(_ x: UnsafePointer<Float>, xStride: Int, tokens: Int,
                               into y: UnsafeMutablePointer<Float>, yStride: Int, pool: ThreadPool) {
        matmul(weight, x: x, xStride: xStride, tokens: tokens, y: y, yStride: yStride, pool: pool)
    }
}

/// y = x Wᵀ where x arrives split by input features (this rank's heads or MLP columns).
/// W: [out, inPerRank]. Each rank computes a partial [tokens, out]; the caller all-reduces
/// (sum) to make the full y on every rank, so the forward pass shows its collectives where
/// they happen (and can merge two partials into one all-reduce, as the MoE layer does).
public struct RowParallelLinear: Sendable {
    /// [out, inPerRank]
    public let weight: WeightMatrix
    public init(weight: WeightMatrix) { self.weight = weight }

    /// x: [tokens, inPerRank] (stride xStride), y: [tokens, out] contiguous: this rank's partial sum.
    public func callAsFunction(_ x: UnsafePointer<Float>, xStride: Int, tokens: Int,
                               into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        matmul(weight, x: x, xStride: xStride, tokens: tokens, y: y, yStride: weight.rows, pool: pool)
    }
}

/// Embedding table split by vocabulary rows: rank r holds rows `vocabRange`.
public struct VocabParallelEmbedding: Sendable {
    /// [vocabRange.count, hidden]
    public let weight: WeightMatrix
    public let vocabRange: Range<Int>
    /// Takes ownership of `weight`: a Q8_0 table is rearranged in place into the split row
    /// layout (`WeightMatrix.splittingQ8_0`), whose decode kernel reads the LM head (the
    /// largest matrix a token reads) with half the instructions per byte.
    public init(weight: WeightMatrix, vocabRange: Range<Int>) {
        self.weight = weight.splittingQ8_0()
        self.vocabRange = vocabRange
    }

    /// out[t] = scale * E[ids[t]] on every rank: the owner writes the row, the others zeros,
    /// then one all-reduce of [tokens, hidden].
    public func lookup(_ ids: [Int32], scale: Float, into out: UnsafeMutablePointer<Float>, comm: any Communicator) throws {
        let h = weight.cols
        for (t, id) in ids.enumerated() {
            let row = out + t * h
            let i = Int(id)
            if vocabRange.contains(i) {
                dequantizeRow(weight, row: i - vocabRange.lowerBound, into: row)
                for c in 0..<h { row[c] *= scale }
            } else {
                row.initialize(repeating: 0, count: h)
            }
        }
        if comm.size > 1 {
            try comm.allReduceSum(UnsafeMutableBufferPointer(start: out, count: ids.count * h))
        }
    }

    /// Tied LM head: logits for this rank's vocabulary slice only, [tokens, vocabRange.count].
    public func logits(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if FidelityProbe.exactLMHead && Kernels.active != .reference {
            matmulF32Activations(weight, x: x, xStride: weight.cols, tokens: tokens, y: y, yStride: weight.rows,
                                 pool: pool, level: Kernels.active)
            return
        }
        matmul(weight, x: x, xStride: weight.cols, tokens: tokens, y: y, yStride: weight.rows, pool: pool)
    }
}
