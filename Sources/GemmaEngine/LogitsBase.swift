// The saved-distribution file of `gemma-node perplexity --save-logits` / `--kl-base`: the
// tokens a run evaluated and, for every scored position, the log-normaliser, the log-prob of
// the token that followed and the K most likely ids with their log-probs. It lets a later run
// (another model, rank count, kernel setting, or transformers' f32 "truth" from
// Scripts/gen_truth_logits.py) be compared with this one without keeping the vocabulary.
//
// Layout (little-endian), version 1:
//   bytes 0..<8   magic "GNLOGITS"
//   u32 version (1), u32 vocab (ids the distribution ranges over), u32 topK,
//   u32 ctx (tokens per chunk, BOS first), u32 chunks, u32 reserved (0)
//   u32 tokens[chunks * ctx]
//   chunks * (ctx - 1) records, one per position p = 0 ..< ctx - 1 of each chunk, in order:
//     f32 logZ (log of the sum of exp(logit) over the vocabulary),
//     f32 log-prob of the next token (tokens[p + 1]),
//     f32 log of the tail mass (the probability of every id outside the top K, summed in
//     Double by the writer; -inf when K covers the vocabulary),
//     topK x (u32 id, f32 log-prob), most likely first (ties: lower id first).
// A record is 12 + 8 K bytes: 268 bytes per token at the default K = 32, against 2 bytes per
// vocabulary entry (512 KiB per token for a 262,144-entry vocabulary) in llama.cpp's
// quantized full-distribution file.
//
// KL(base || this) from K entries: the tail (ids outside the base's top K) is merged into one
// outcome, so the value is sum_{top K} p (log p - log q) + p_T log(p_T / q_T) with p_T, q_T the
// two distributions' tail masses. p_T is stored rather than taken as 1 - sum of the K f32
// probabilities, whose rounding (~1e-7) would swamp a confident position's tail. Merging outcomes never raises KL (log-sum inequality), so
// this is a lower bound of the full KL; the gap is the KL inside the tail weighted by p_T,
// measured in docs/FIDELITY.md. The reader adds 1 - sum p (zero for exact probabilities) so
// that the f32 rounding of the stored log-probs enters only to second order.
import Foundation

public enum LogitsBaseError: Error, CustomStringConvertible, Equatable, SameOnEveryRankError {
    case malformed(String)

    public var description: String {
        switch self {
        case let .malformed(why): return "logits base file: \(why)"
        }
    }
}

/// One scored position of a base file.
public struct BaseRecord: Sendable, Equatable {
    public var logZ: Float
    public var targetLogProb: Float
    /// log(1 - sum of the top K's probabilities), computed from the full distribution.
    public var logTailMass: Float
    /// Most likely first.
    public var ids: [Int32]
    public var logProbs: [Float]

    public init(logZ: Float, targetLogProb: Float, logTailMass: Float, ids: [Int32], logProbs: [Float]) {
        self.logZ = logZ
        self.targetLogProb = targetLogProb
        self.logTailMass = logTailMass
        self.ids = ids
        self.logProbs = logProbs
    }
}

/// A whole base file in memory.
public struct LogitsBase: Sendable, Equatable {
    public static let magic = Array("GNLOGITS".utf8)
    public static let version: UInt32 = 1
    public static let defaultTopK = 32

    public var vocab: Int
    public var topK: Int
    public var ctx: Int
    public var chunks: Int
    /// chunks * ctx
    public var tokens: [Int32]
    /// chunks * (ctx - 1)
    public var records: [BaseRecord]

    public init(vocab: Int, topK: Int, ctx: Int, chunks: Int, tokens: [Int32], records: [BaseRecord]) {
        self.vocab = vocab
        self.topK = topK
        self.ctx = ctx
        self.chunks = chunks
        self.tokens = tokens
        self.records = records
    }

    /// Bytes of one position's record.
    public static func recordBytes(topK: Int) -> Int { 12 + 8 * topK }

    public func encoded() -> [UInt8] {
        var out = Self.magic
        out.reserveCapacity(32 + 4 * tokens.count + records.count * Self.recordBytes(topK: topK))
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func f32(_ v: Float) { u32(v.bitPattern) }
        for v in [Self.version, UInt32(vocab), UInt32(topK), UInt32(ctx), UInt32(chunks), 0] { u32(v) }
        for t in tokens { u32(UInt32(bitPattern: t)) }
        for r in records {
            f32(r.logZ)
            f32(r.targetLogProb)
            f32(r.logTailMass)
            for k in 0..<topK {
                u32(UInt32(bitPattern: r.ids[k]))
                f32(r.logProbs[k])
            }
        }
        return out
    }

    /// Parses and checks a file: header, sizes, ids inside the vocabulary, log-probs finite,
    /// not above 0 (a small rounding margin) and in descending order.
    public init(bytes: [UInt8]) throws {
        func bad(_ why: String) -> LogitsBaseError { .malformed(why) }
        guard bytes.count >= 32, Array(bytes[0..<8]) == Self.magic else {
            throw bad("not a gemma-node logits file (no GNLOGITS header)")
        }
        func u32(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
        }
        let version = u32(8)
        guard version == Self.version else { throw bad("version \(version), this build reads version \(Self.version)") }
        let vocab = Int(u32(12)), topK = Int(u32(16)), ctx = Int(u32(20)), chunks = Int(u32(24))
        guard vocab >= 1, vocab < 1 << 24 else { throw bad("vocabulary size \(vocab) out of range 1..<2^24") }
        guard topK >= 1, topK <= vocab else { throw bad("top-K \(topK) not in 1...\(vocab)") }
        guard ctx >= 2, chunks >= 1, ctx <= 1 << 24, chunks <= 1 << 24 else { throw bad("ctx \(ctx) and chunks \(chunks): need ctx >= 2 and chunks >= 1") }
        let tokenCount = ctx * chunks
        let recordCount = (ctx - 1) * chunks
        let expected = 32 + 4 * tokenCount + recordCount * Self.recordBytes(topK: topK)
        guard bytes.count == expected else {
            throw bad("\(bytes.count) bytes, the header (ctx \(ctx), \(chunks) chunks, top \(topK)) needs \(expected)")
        }
        var tokens = [Int32](repeating: 0, count: tokenCount)
        for i in 0..<tokenCount {
            let t = u32(32 + 4 * i)
            guard t < UInt32(vocab) else { throw bad("token \(t) at index \(i) is outside the vocabulary of \(vocab)") }
            tokens[i] = Int32(t)
        }
        var records: [BaseRecord] = []
        records.reserveCapacity(recordCount)
        var at = 32 + 4 * tokenCount
        // A log-prob is at most 0; allow the f32 rounding of a computed value near 0.
        let ceiling: Float = 1e-4
        for n in 0..<recordCount {
            let logZ = Float(bitPattern: u32(at)), target = Float(bitPattern: u32(at + 4)), tail = Float(bitPattern: u32(at + 8))
            guard logZ.isFinite, target.isFinite || target == -.infinity, target <= ceiling,
                  tail.isFinite || tail == -.infinity, tail <= ceiling else {
                throw bad("record \(n): log-normaliser \(logZ), next-token log-prob \(target) or log tail mass \(tail) invalid")
            }
            var ids = [Int32](repeating: 0, count: topK), lps = [Float](repeating: 0, count: topK)
            for k in 0..<topK {
                let id = u32(at + 12 + 8 * k), lp = Float(bitPattern: u32(at + 16 + 8 * k))
                guard id < UInt32(vocab) else { throw bad("record \(n): id \(id) outside the vocabulary of \(vocab)") }
                guard lp.isFinite || lp == -.infinity, lp <= ceiling, k == 0 || lp <= lps[k - 1] else {
                    throw bad("record \(n): log-prob \(lp) at rank \(k) is not a descending log-probability")
                }
                ids[k] = Int32(id)
                lps[k] = lp
            }
            records.append(BaseRecord(logZ: logZ, targetLogProb: target, logTailMass: tail, ids: ids, logProbs: lps))
            at += Self.recordBytes(topK: topK)
        }
        self.init(vocab: vocab, topK: topK, ctx: ctx, chunks: chunks, tokens: tokens, records: records)
    }
}
