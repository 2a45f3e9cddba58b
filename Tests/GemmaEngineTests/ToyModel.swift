// Test doubles for the engine: a toy vocab-parallel "model" whose logits depend on a slot's
// whole token history (so batching or KV bookkeeping mistakes change the output), and a small
// self-contained plan codec so the step loop can be tested apart from GemmaWire.
import Foundation
@testable import GemmaEngine
import GemmaModel
import GemmaParallel

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
    static func referenceGenerate(prompt: [Int32], n: Int, settings: SamplerSettings, vocab: Int,
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

/// A plain length-prefixed little-endian codec for tests (production uses GemmaWire).
struct TestPlanCodec: StepPlanCodec {
    struct Truncated: Error {}

    func encode(_ p: PlannedStep) throws -> [UInt8] {
        var b: [UInt8] = []
        func u64(_ x: UInt64) { for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: x >> (8 * UInt64(i)))) } }
        func i(_ x: Int) { u64(UInt64(bitPattern: Int64(x))) }
        func f(_ x: Float) { u64(UInt64(x.bitPattern)) }
        u64(p.stepId); i(p.shutdown ? 1 : 0); i(p.freeSlots.count); p.freeSlots.forEach(i)
        let reason = Array(p.shutdownReason.utf8); i(reason.count); b.append(contentsOf: reason)
        i(p.work.count)
        for w in p.work {
            i(w.slot); u64(w.requestId); i(w.startPosition); i(w.isPrefillChunk ? 1 : 0); i(w.wantSample ? 1 : 0)
            f(w.sampling.temperature); i(w.sampling.topK); f(w.sampling.topP); f(w.sampling.minP); u64(w.sampling.seed)
            u64(w.stepIndex); i(w.tokens.count); w.tokens.forEach { i(Int($0)) }
        }
        return b
    }

    func decode(_ bytes: [UInt8]) throws -> PlannedStep {
        var at = 0
        func u64() throws -> UInt64 {
            guard at + 8 <= bytes.count else { throw Truncated() }
            var x: UInt64 = 0
            for k in 0..<8 { x |= UInt64(bytes[at + k]) << (8 * UInt64(k)) }
            at += 8
            return x
        }
        func i() throws -> Int { Int(Int64(bitPattern: try u64())) }
        func f() throws -> Float { Float(bitPattern: UInt32(truncatingIfNeeded: try u64())) }
        func count() throws -> Int { let n = try i(); guard n >= 0 && n <= bytes.count else { throw Truncated() }; return n }
        var p = PlannedStep(stepId: try u64())
        p.shutdown = try i() == 1
        p.freeSlots = try (0..<count()).map { _ in try i() }
        let n = try count()
        guard at + n <= bytes.count else { throw Truncated() }
        p.shutdownReason = String(decoding: bytes[at..<(at + n)], as: UTF8.self); at += n
        for _ in 0..<(try count()) {
            let slot = try i(), rid = try u64(), start = try i(), pre = try i() == 1, want = try i() == 1
            let s = SamplerSettings(temperature: try f(), topK: try i(), topP: try f(), minP: try f(), seed: try u64())
            let step = try u64()
            let tokens = try (0..<count()).map { _ in Int32(truncatingIfNeeded: try i()) }
            p.work.append(PlannedWork(slot: slot, requestId: rid, tokens: tokens, startPosition: start,
                                      isPrefillChunk: pre, wantSample: want, sampling: s, stepIndex: step))
        }
        return p
    }
}
