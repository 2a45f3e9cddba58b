// Perplexity and closeness to a saved distribution (`gemma-node perplexity`), computed on the
// vocabulary shards: no rank gathers the vocabulary. Each rank reduces its slice of a position's
// logits to a few numbers (its max and argmax, its sum of exp relative to its max, the next
// token's logit if it owns it, its share of the KL sums over the base's top-K ids, and its own
// top-K for --save-logits); one all-gather of those Doubles per batch gives every rank the log
// normaliser, the perplexity term, the KL and the merged top-K. The sums are combined in rank
// order in Double, so the result does not depend on the rank count beyond the logits themselves.
import Foundation
import GemmaModel
import GemmaParallel

/// What one scored position gave.
public struct ScoredPosition: Sendable, Equatable {
    /// log sum exp(logits)
    public var logZ: Double
    /// -log p(next token)
    public var nll: Double
    /// This run's most likely id (ties: lowest id).
    public var argmax: Int32
    /// KL(base || this) (base top-K plus the merged tail, see LogitsBase.swift); nil without a base.
    public var kl: Double?
    /// The base's most likely id is this run's most likely id.
    public var top1Agrees: Bool?
    /// Mean |this logit - base logit| over the base's (up to) 10 most likely ids.
    public var top10AbsDiff: Double?
    /// This run's K most likely ids and log-probs (for --save-logits).
    public var top: [(id: Int32, logProb: Double)]?
    /// log of this run's probability outside `top` (for --save-logits).
    public var logTailMass: Double?

    public static func == (a: ScoredPosition, b: ScoredPosition) -> Bool {
        a.logZ == b.logZ && a.nll == b.nll && a.argmax == b.argmax && a.kl == b.kl && a.top1Agrees == b.top1Agrees
            && a.top10AbsDiff == b.top10AbsDiff && a.top?.map(\.id) == b.top?.map(\.id) && a.top?.map(\.logProb) == b.top?.map(\.logProb)
    }
}

public enum PerplexityScorer {
    /// Fixed Doubles per row in the all-gathered record, before the 2 K top-K entries.
    static let fixed = 7

    /// Scores `rows.count` positions of this rank's logits slice.
    /// - rows: this rank's logits of each position, `range.count` values each.
    /// - range: this rank's vocabulary slice; ids >= `vocab` (padding rows) are ignored.
    /// - targets: the next token of each position.
    /// - base: the base's record of each position, or nil.
    /// - keepTop: K of this run's own top-K to return (0: none).
    /// Every rank calls it with the same row count, targets, base and keepTop.
    public static func score(rows: [UnsafeBufferPointer<Float>], range: Range<Int>, vocab: Int, targets: [Int32],
                             base: [BaseRecord]?, keepTop: Int, comm: any Communicator) throws -> [ScoredPosition] {
        precondition(targets.count == rows.count && (base == nil || base!.count == rows.count))
        let width = fixed + 2 * keepTop
        var record = [Double](repeating: 0, count: rows.count * width)
        let upper = min(range.upperBound, vocab)
        for (r, row) in rows.enumerated() {
            var o = r * width
            var m = -Double.infinity, a = -1
            for i in range.lowerBound..<max(range.lowerBound, upper) {
                let x = Double(row[i - range.lowerBound])
                if x > m { m = x; a = i }
            }
            var s = 0.0
            if m > -.infinity {
                for i in range.lowerBound..<upper { s += exp(Double(row[i - range.lowerBound]) - m) }
            }
            let target = Int(targets[r])
            let t = range.contains(target) && target < upper ? Double(row[target - range.lowerBound]) : 0
            var sumA = 0.0, sumB = 0.0, sumD = 0.0
            if let b = base?[r] {
                let baseLogZ = Double(b.logZ)
                for k in 0..<b.ids.count {
                    let id = Int(b.ids[k])
                    guard range.contains(id), id < upper else { continue }
                    let x = Double(row[id - range.lowerBound]), lp = Double(b.logProbs[k])
                    let p = exp(lp)
                    sumA += p * (lp - x)
                    sumB += exp(x - m)
                    if k < 10 { sumD += abs(x - (lp + baseLogZ)) }
                }
            }
            record[o] = m; record[o + 1] = Double(a); record[o + 2] = s; record[o + 3] = t
            record[o + 4] = sumA; record[o + 5] = sumB; record[o + 6] = sumD
            o += fixed
            if keepTop > 0 {
                let top = localTop(row, range: range.lowerBound..<max(range.lowerBound, upper), k: keepTop)
                for k in 0..<keepTop {
                    record[o + 2 * k] = k < top.count ? Double(top[k].id) : -1
                    record[o + 2 * k + 1] = k < top.count ? top[k].x : -.infinity
                }
            }
        }
        var gathered = [Double](repeating: 0, count: record.count * comm.size)
        try record.withUnsafeBytes { src in
            try gathered.withUnsafeMutableBytes { dst in try comm.allGatherBytes(src, into: dst) }
        }

        var out: [ScoredPosition] = []
        out.reserveCapacity(rows.count)
        for r in 0..<rows.count {
            func at(_ rank: Int, _ j: Int) -> Double { gathered[rank * record.count + r * width + j] }
            var bigM = -Double.infinity, argmax = -1
            for rank in 0..<comm.size where at(rank, 0) > bigM { bigM = at(rank, 0); argmax = Int(at(rank, 1)) }
            var sum = 0.0, target = 0.0, sumA = 0.0, sumD = 0.0
            for rank in 0..<comm.size {
                if at(rank, 0) > -.infinity { sum += at(rank, 2) * exp(at(rank, 0) - bigM) }
                target += at(rank, 3)
                sumA += at(rank, 4)
                sumD += at(rank, 6)
            }
            let logZ = bigM + log(sum)
            var position = ScoredPosition(logZ: logZ, nll: logZ - target, argmax: Int32(argmax))
            if let b = base?[r] {
                // This run's tail mass from each rank's (all - top K) sum: no cancellation against 1.
                var qT = 0.0
                for rank in 0..<comm.size where at(rank, 0) > -.infinity {
                    qT += max(0, at(rank, 2) - at(rank, 5)) * exp(at(rank, 0) - logZ)
                }
                qT = max(Double.leastNormalMagnitude, qT)
                let pS = b.logProbs.reduce(0.0) { $0 + exp(Double($1)) }
                let pT = exp(Double(b.logTailMass))
                let tail = pT > 0 ? pT * log(pT / qT) : 0
                // + 1 - pS - pT: zero for an exactly normalised base, it cancels the first-order
                // effect of the base's f32 log-prob rounding (sum p != 1 by ~1e-7), which would
                // otherwise put a floor of ~1e-7 under the KL of identical distributions.
                position.kl = sumA + pS * logZ + tail + (1 - pS - pT)
                position.top1Agrees = Int(b.ids[0]) == argmax
                position.top10AbsDiff = sumD / Double(min(10, b.ids.count))
            }
            if keepTop > 0 {
                var candidates: [(id: Int32, x: Double)] = []
                for rank in 0..<comm.size {
                    for k in 0..<keepTop where at(rank, fixed + 2 * k) >= 0 {
                        candidates.append((Int32(at(rank, fixed + 2 * k)), at(rank, fixed + 2 * k + 1)))
                    }
                }
                candidates.sort { $0.x > $1.x || ($0.x == $1.x && $0.id < $1.id) }
                let kept = candidates.prefix(keepTop)
                position.top = kept.map { ($0.id, $0.x - logZ) }
                // Tail mass as the sum minus the kept terms, each relative to the global max.
                let keptSum = kept.reduce(0.0) { $0 + exp($1.x - bigM) }
                position.logTailMass = log(max(0, sum - keptSum)) + bigM - logZ
            }
            out.append(position)
        }
        return out
    }

    /// The k largest values of a slice with their global ids, largest first, ties to the lower id.
    static func localTop(_ row: UnsafeBufferPointer<Float>, range: Range<Int>, k: Int) -> [(id: Int, x: Double)] {
        var top: [(id: Int, x: Double)] = []
        top.reserveCapacity(k + 1)
        for i in range {
            let x = Double(row[i - range.lowerBound])
            if top.count == k, x <= top[k - 1].x { continue }
            var j = top.count
            while j > 0, top[j - 1].x < x { j -= 1 }
            top.insert((i, x), at: j)
            if top.count > k { top.removeLast() }
        }
        return top
    }
}

/// Running sums of a perplexity run (rank 0).
public struct PerplexitySummary: Sendable {
    public private(set) var count = 0
    private var nllSum = 0.0, nllSquares = 0.0
    public private(set) var klCount = 0
    private var klSum = 0.0, klSquares = 0.0
    public private(set) var klMax = 0.0
    private var agreements = 0, top10Sum = 0.0
    private var baseNLLSum = 0.0

    public init() {}

    public mutating func add(_ p: ScoredPosition, base: BaseRecord?) {
        count += 1
        nllSum += p.nll
        nllSquares += p.nll * p.nll
        if let kl = p.kl {
            klCount += 1
            klSum += kl
            klSquares += kl * kl
            klMax = max(klMax, kl)
            if p.top1Agrees == true { agreements += 1 }
            top10Sum += p.top10AbsDiff ?? 0
        }
        if let base { baseNLLSum -= Double(base.targetLogProb) }
    }

    static func meanAndError(_ sum: Double, _ squares: Double, _ n: Int) -> (Double, Double) {
        let mean = sum / Double(max(1, n))
        guard n > 1 else { return (mean, 0) }
        let variance = max(0, (squares / Double(n) - mean * mean) * Double(n) / Double(n - 1))
        return (mean, (variance / Double(n)).squareRoot())
    }

    /// exp(mean NLL), and its standard error from the NLL's (first-order: ppl * stderr(NLL)).
    public var perplexity: (value: Double, error: Double) {
        let (mean, err) = Self.meanAndError(nllSum, nllSquares, count)
        return (exp(mean), exp(mean) * err)
    }

    public var basePerplexity: Double? { klCount > 0 ? exp(baseNLLSum / Double(klCount)) : nil }
    public var meanKL: (value: Double, error: Double) { Self.meanAndError(klSum, klSquares, klCount) }
    public var top1Agreement: Double { Double(agreements) / Double(max(1, klCount)) }
    public var meanTop10AbsDiff: Double { top10Sum / Double(max(1, klCount)) }
}
