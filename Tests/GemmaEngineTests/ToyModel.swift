// Test double for the engine: a toy vocab-parallel "model" whose logits depend on a slot's
// whole token history (so batching or KV bookkeeping mistakes change the output).
import Foundation
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaWire

enum ToyModelError: Error, CustomStringConvertible {
    case badPosition(slot: Int, expected: Int, got: Int)
    case badToken(Int32)
    var description: String {
        switch self {
        case let .badPosition(slot, e, g): return "toy: slot \(slot) expected position \(e), got \(g)"
        case let .badToken(t): return "toy: token \(t) out of vocabulary"
        }
    }
}

/// Logit of id v after history h: a hash of (h, v) mapped to about N(0, 2), plus a bonus for
/// v == (last token * 7 + 3) mod vocab so greedy decoding follows a visible pattern.
final class ToyModel: ShardedCausalLM {
    let vocabSize: Int
    let sampleableVocab: Int
    let vocabRange: Range<Int>
    let maxContext: Int
    let slots: Int
    let maxBatchTokens: Int
    /// Per slot: the tokens cached so far (the toy's "KV cache").
    private var history: [[Int32]]
    /// [maxBatchTokens, vocabRange.count], allocated once.
    private let output: UnsafeMutableBufferPointer<Float>
    private(set) var forwardCalls = 0

    init(vocabSize: Int = 96, sampleableVocab: Int? = nil, rank: Int, ranks: Int, maxContext: Int = 64,
         slots: Int = 4, maxBatchTokens: Int = 8) {
        self.vocabSize = vocabSize
        self.sampleableVocab = sampleableVocab ?? vocabSize
        let per = vocabSize / ranks
        vocabRange = (rank * per)..<((rank + 1) * per)
        self.maxContext = maxContext
        self.slots = slots
        self.maxBatchTokens = maxBatchTokens
        history = Array(repeating: [], count: slots)
        output = .allocate(capacity: maxBatchTokens * per)
    }

    deinit { output.deallocate() }

    static func logit(history h: [Int32], id v: Int, vocab: Int) -> Float {
        var key: UInt64 = 0x1234
        for t in h { key = SamplingNoise.mix(key ^ UInt64(t)) }
        let u = SamplingNoise.uniform(key: key, id: v)
        var x = Float((u - 0.5) * 6)
        if let last = h.last, v == (Int(last) * 7 + 3) % vocab { x += 4 }
        return x
    }

    func forward(_ batch: [BatchEntry]) throws -> LogitsSlice {
        forwardCalls += 1
        var rows = 0
        for e in batch {
            guard e.token >= 0 && Int(e.token) < vocabSize else { throw ToyModelError.badToken(e.token) }
            guard e.position == history[e.slot].count else {
                throw ToyModelError.badPosition(slot: e.slot, expected: history[e.slot].count, got: e.position)
            }
            history[e.slot].append(e.token)
            if e.wantLogits {
                for j in 0..<vocabRange.count {
                    output[rows * vocabRange.count + j] = Self.logit(history: history[e.slot], id: vocabRange.lowerBound + j, vocab: vocabSize)
                }
                rows += 1
            }
        }
        return LogitsSlice(vocabRange: vocabRange, rows: rows, values: UnsafeBufferPointer(output))
    }

    func release(slot: Int) { history[slot] = [] }

    /// Single-process reference: greedy/sampled continuation of one prompt with full logits.
    static func referenceGenerate(prompt: [Int32], n: Int, settings: SamplingParams, vocab: Int,
                                  sampleable: Int, stop: Set<Int32> = []) -> [Int32] {
        var h = prompt
        var out: [Int32] = []
        for step in 0..<n {
            let logits = (0..<vocab).map { logit(history: h, id: $0, vocab: vocab) }
            guard let t = referenceSample(logits, sampleable: sampleable, settings: settings, step: UInt64(step)) else { break }
            if stop.contains(t) { break }
            out.append(t)
            h.append(t)
        }
        return out
    }
}
