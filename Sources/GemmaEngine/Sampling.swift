// Distributed token sampling over vocab-parallel logits (DESIGN.md §4): every rank holds only
// its vocabulary slice; ranks exchange small fixed-size float records with `allGather` and
// every rank derives the same token. The full logits are never gathered.
//
// Randomness is the Gumbel-max trick with counter-based noise: the sample is
// argmax_i(logit_i / T + g(seed, step, i)) over the kept ids, where g is Gumbel noise hashed
// from (seed, step index in the sequence, token id). That is an exact draw from the softmax,
// and because each id's noise depends on nothing but its id, the winner does not depend on
// how the vocabulary is split: the same seed gives the same token at any number of ranks.
import GemmaModel
import GemmaParallel
import GemmaWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from sampling.
public enum SamplingError: Error, CustomStringConvertible, Equatable {
    case noCandidates(row: Int)
    case malformedRecord(String)

    public var description: String {
        switch self {
        case let .noCandidates(row): return "sampling row \(row): no sampleable token (all logits are -inf or NaN)"
        case let .malformedRecord(m): return "sampling exchange: \(m)"
        }
    }
}

// MARK: - Noise

/// Counter-based noise: a pure function of (seed, step, id), so any rank can evaluate it for
/// the ids it owns. SplitMix64's finaliser is a bijective 64-bit mixer with good avalanche.
public enum SamplingNoise {
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The per-draw key of step `step` of a sequence seeded with `seed`.
    public static func key(seed: UInt64, step: UInt64) -> UInt64 {
        mix(mix(seed) ^ (step &* 0xD1B5_4A32_D192_ED03))
    }

    /// Uniform in the open interval (0, 1), 53 bits.
    @inline(__always)
    public static func uniform(key: UInt64, id: Int) -> Double {
        let bits = mix(key ^ (UInt64(truncatingIfNeeded: id) &* 0xA24B_AED4_963E_E407))
        return (Double(bits >> 11) + 0.5) * 0x1.0p-53
    }

    /// Standard Gumbel noise, -log(-log(u)).
    @inline(__always)
    public static func gumbel(key: UInt64, id: Int) -> Double {
        -log(-log(uniform(key: key, id: id)))
    }

    /// The perturbed score whose argmax is the sample: logit / T + Gumbel noise, rounded to
    /// Float so ranks can exchange it exactly in a float record. Equal scores tie to the
    /// lowest id everywhere, so the rounding cannot make ranks disagree.
    @inline(__always)
    public static func score(logit: Float, id: Int, temperature: Float, key: UInt64) -> Float {
        Float(Double(logit) / Double(temperature) + gumbel(key: key, id: id))
    }
}

// MARK: - Candidates

/// A (logit, id) pair; ordered best-first: larger value, then lower id.
public struct Candidate: Sendable, Equatable {
    public var value: Float
    public var id: Int32
    public init(value: Float, id: Int32) { self.value = value; self.id = id }

    /// True when `self` ranks before `other` (larger value; ties to the lower id).
    @inline(__always)
    public func precedes(_ other: Candidate) -> Bool {
        value > other.value || (value == other.value && id < other.id)
    }
}

/// NaN never wins: it is read as -inf.
@inline(__always)
func clean(_ x: Float) -> Float { x.isNaN ? -.infinity : x }

/// The best `count` candidates of `logits` (ids start at `firstId`), best first. Ids whose
/// logit is -inf (or NaN) are never returned.
func localTopK(_ logits: UnsafeBufferPointer<Float>, firstId: Int, count: Int) -> [Candidate] {
    guard count > 0, !logits.isEmpty else { return [] }
    if count > 64 {
        // Large k (the nucleus search grows it): a bounded heap whose root is the worst kept
        // candidate; most logits fail the one comparison with the root, so this stays O(n).
        var heap: [Candidate] = []
        heap.reserveCapacity(count)
        // `a` is worse than `b` when `b` precedes it; the root is the worst.
        @inline(__always) func worse(_ a: Candidate, _ b: Candidate) -> Bool { b.precedes(a) }
        for i in 0..<logits.count {
            let v = clean(logits[i])
            if v == -.infinity { continue }
            let c = Candidate(value: v, id: Int32(firstId + i))
            if heap.count < count {
                heap.append(c)
                var j = heap.count - 1
                while j > 0 {
                    let parent = (j - 1) / 2
                    if worse(heap[j], heap[parent]) { heap.swapAt(j, parent); j = parent } else { break }
                }
            } else if c.precedes(heap[0]) {
                heap[0] = c
                var j = 0
                while true {
                    let l = 2 * j + 1, r = l + 1
                    var m = j
                    if l < heap.count && worse(heap[l], heap[m]) { m = l }
                    if r < heap.count && worse(heap[r], heap[m]) { m = r }
                    if m == j { break }
                    heap.swapAt(j, m)
                    j = m
                }
            }
        }
        heap.sort { $0.precedes($1) }
        return heap
    }
    // Small k: an insertion-sorted window; most logits fail the first comparison.
    var best: [Candidate] = []
    best.reserveCapacity(count + 1)
    for i in 0..<logits.count {
        let v = clean(logits[i])
        if v == -.infinity { continue }
        let c = Candidate(value: v, id: Int32(firstId + i))
        if best.count == count, let last = best.last, !c.precedes(last) { continue }
        var j = best.count
        while j > 0 && c.precedes(best[j - 1]) { j -= 1 }
        best.insert(c, at: j)
        if best.count > count { best.removeLast() }
    }
    return best
}

/// Applies temperature, top-p and min-p to candidates already sorted best-first (and already
/// cut to top-k), then draws one with the Gumbel noise. `totalMass`, when given, is the
/// softmax denominator over the full vocabulary relative to `candidates[0]` (the k = 0 case);
/// otherwise the candidates are the whole distribution. Returns the chosen id and how many
/// candidates survived the filters. Shared by the distributed sampler and the tests'
/// reference only through its inputs' definitions, not through this code.
func drawFromSorted(_ candidates: [Candidate], settings: SamplingParams, key: UInt64,
                    totalMass: Double? = nil) -> Candidate? {
    guard let top = candidates.first else { return nil }
    let t = Double(settings.temperature)
    let sTop = Double(top.value) / t
    var kept = candidates.count
    if settings.topP < 1 {
        let z: Double
        if let totalMass {
            z = totalMass
        } else {
            var sum = 0.0
            for c in candidates { sum += exp(Double(c.value) / t - sTop) }
            z = sum
        }
        let p = Double(settings.topP)
        var cumulative = 0.0
        kept = 0
        // Keep j while the mass strictly before it is below p (the first id is always kept).
        for c in candidates {
            if kept > 0 && cumulative >= p { break }
            cumulative += exp(Double(c.value) / t - sTop) / z
            kept += 1
        }
    }
    var best: Candidate?
    let minP = Double(settings.minP)
    for c in candidates.prefix(kept) {
        if minP > 0 && exp(Double(c.value) / t - sTop) < minP { break }  // sorted: the rest are smaller
        let s = Candidate(value: SamplingNoise.score(logit: c.value, id: Int(c.id), temperature: settings.temperature, key: key),
                          id: c.id)
        if best == nil || s.precedes(best!) { best = s }
    }
    return best.map { Candidate(value: $0.value, id: $0.id) }
}

// MARK: - The distributed sampler

/// One sequence's draw in a step: which logits row and how to sample.
public struct SampleRequest: Sendable, Equatable {
    /// Row of the step's `LogitsSlice`.
    public var row: Int
    public var settings: SamplingParams
    /// Index of the token being drawn within its sequence (0 = first generated token): with
    /// the seed it keys the noise, so a sequence's draws do not depend on batching.
    public var stepIndex: UInt64
    /// nil: no log-probabilities; n: the chosen id's and the n most likely ids' (`TokenLogprobs`).
    public var logprobs: Int?

    public init(row: Int, settings: SamplingParams, stepIndex: UInt64, logprobs: Int? = nil) {
        self.row = row
        self.settings = settings
        self.stepIndex = stepIndex
        self.logprobs = logprobs
    }
}

/// Counters of one sampling exchange, for timings and the docs' bytes-per-token figures.
public struct SamplingStats: Sendable, Equatable {
    /// allGather rounds.
    public var rounds = 0
    /// Floats this rank contributed over all rounds (each rank receives `size` times as many).
    public var floatsSent = 0
    public init() {}
}

/// Samples one token per request from vocab-parallel logits. Every rank of `comm` calls
/// `sample` with the same requests in the same order and gets the same ids back.
///
/// Per request, by settings:
/// - greedy: one round, record (max logit, id).
/// - top-k (0 < k < vocabulary): one round, record = local top-k pairs; the merged list is the
///   exact global top-k, then temperature/top-p/min-p and the draw run on it.
/// - k = 0 with top-p < 1: record = local top-C pairs + (local max, local softmax mass as two
///   floats); if the exact global top-C does not reach p, C grows 8x and the round repeats.
/// - k = 0, top-p = 1: record = local best perturbed (score, id) among ids kept by min-p; with
///   min-p > 0 a first round agrees on the global max logit.
public struct DistributedSampler {
    /// First candidate count of the k = 0 nucleus search.
    public var initialNucleusCandidates = 64

    public init() {}

    /// Draws one id per request. `logits` is this rank's slice; `sampleableVocab` bounds the
    /// ids that may be chosen (padding rows above it are ignored).
    public func sample(_ requests: [SampleRequest], logits: LogitsSlice, sampleableVocab: Int,
                       comm: any Communicator, stats: inout SamplingStats) throws -> [Int32] {
        try sampleWithLogprobs(requests, logits: logits, sampleableVocab: sampleableVocab, comm: comm, stats: &stats).ids
    }

    /// `sample`, plus the log-probabilities of the requests that ask for them (nil for the
    /// others): one more allGather round after the draw, only when some request asks
    /// (`LogprobExchange`), so other steps cost exactly what they did.
    public func sampleWithLogprobs(_ requests: [SampleRequest], logits: LogitsSlice, sampleableVocab: Int,
                                   comm: any Communicator, stats: inout SamplingStats) throws -> (ids: [Int32], logprobs: [TokenLogprobs?]) {
        for r in requests {
            try r.settings.validate()
            guard r.row >= 0 && r.row < logits.rows else {
                throw SamplingError.malformedRecord("row \(r.row) outside 0..<\(logits.rows)")
            }
        }
        let lo = min(logits.vocabRange.lowerBound, sampleableVocab)
        let hi = min(logits.vocabRange.upperBound, sampleableVocab)
        // This rank's sampleable part of each row; may be empty (a slice of padding ids).
        let width = hi - lo
        var states = requests.map { RowState(request: $0, vocabulary: sampleableVocab,
                                             initialNucleus: initialNucleusCandidates) }
        var results = [Int32](repeating: -1, count: requests.count)

        while true {
            let open = states.indices.filter { !states[$0].done }
            if open.isEmpty { break }
            let parts = open.map { i in
                states[i].record(row: UnsafeBufferPointer(rebasing: logits.row(states[i].request.row)[0..<width]), firstId: lo)
            }
            for (index, perRank) in zip(open, try Self.gather(parts, comm: comm, stats: &stats)) {
                if let id = try states[index].absorb(perRank, rowIndex: index) {
                    results[index] = id
                }
            }
        }
        var logprobs = [TokenLogprobs?](repeating: nil, count: requests.count)
        let wanted = requests.indices.filter { requests[$0].logprobs != nil }
        if !wanted.isEmpty {
            let parts = try wanted.map { i in
                let top = requests[i].logprobs!
                guard top >= 0 && top <= WireLimits.maxTopLogprobs else {
                    throw SamplingError.malformedRecord("logprobs alternatives \(top) outside 0...\(WireLimits.maxTopLogprobs)")
                }
                let row = UnsafeBufferPointer(rebasing: logits.row(requests[i].row)[0..<width])
                return LogprobExchange.record(row: row, firstId: lo, chosen: results[i], top: top)
            }
            for (i, perRank) in zip(wanted, try Self.gather(parts, comm: comm, stats: &stats)) {
                logprobs[i] = try LogprobExchange.combine(perRank, chosen: results[i], top: top(requests[i]),
                                                          vocabulary: sampleableVocab, rowIndex: i)
            }
        }
        return (results, logprobs)
    }

    private func top(_ request: SampleRequest) -> Int { request.logprobs ?? 0 }

    /// One allGather round: this rank's parts are sent as one record (every rank's parts have
    /// the same lengths, by the `Communicator` contract and identical row states); returns,
    /// per part, its piece from every rank in rank order.
    static func gather(_ parts: [[Float]], comm: any Communicator, stats: inout SamplingStats) throws -> [[ArraySlice<Float>]] {
        let record = Array(parts.joined())
        let gathered = try comm.allGather(record)
        stats.rounds += 1
        stats.floatsSent += record.count
        guard gathered.count == record.count * comm.size else {
            throw SamplingError.malformedRecord("gathered \(gathered.count) floats, expected \(record.count * comm.size)")
        }
        var offset = 0
        return parts.map { part in
            defer { offset += part.count }
            return (0..<comm.size).map { r in gathered[(r * record.count + offset)..<(r * record.count + offset + part.count)] }
        }
    }
}

/// One request's progress through the rounds; every rank holds an identical copy, advanced
/// by identical gathered data, so all ranks agree on the number of rounds.
struct RowState {
    enum Phase {
        case greedy
        case topK(Int)
        case nucleus(Int)
        case gumbelMax       // k = 0, p = 1, min-p = 0 (or after the max is known)
        case gumbelGlobalMax // first round of k = 0 with min-p: agree on the max logit
    }

    let request: SampleRequest
    let key: UInt64
    let vocabulary: Int
    var phase: Phase
    var done = false
    /// Global max logit (known after `gumbelGlobalMax`).
    var globalMax: Float = .infinity

    init(request: SampleRequest, vocabulary: Int, initialNucleus: Int) {
        self.request = request
        self.vocabulary = vocabulary
        key = SamplingNoise.key(seed: request.settings.seed, step: request.stepIndex)
        let s = request.settings
        if s.isGreedy {
            phase = .greedy
        } else if s.topK > 0 && Int(s.topK) < vocabulary {
            phase = .topK(Int(s.topK))
        } else if s.topP < 1 {
            phase = .nucleus(max(1, initialNucleus))
        } else if s.minP > 0 {
            phase = .gumbelGlobalMax
        } else {
            phase = .gumbelMax
        }
    }

    /// This rank's record for the current round.
    func record(row: UnsafeBufferPointer<Float>, firstId: Int) -> [Float] {
        switch phase {
        case .greedy:
            let best = localTopK(row, firstId: firstId, count: 1).first
            return [best?.value ?? -.infinity, Float(best?.id ?? -1)]
        case let .topK(k):
            return pairs(localTopK(row, firstId: firstId, count: k), padTo: k)
        case let .nucleus(c):
            // One extra candidate tells whether this rank's list was cut short.
            var top = localTopK(row, firstId: firstId, count: c + 1)
            let truncated = top.count > c
            if truncated { top.removeLast() }
            var out = pairs(top, padTo: c)
            // Local softmax mass relative to the local max, sent as hi + lo floats so the
            // coordinator's sum keeps about 48 bits.
            let t = Double(request.settings.temperature)
            var mass = 0.0
            if let m = top.first {
                let sMax = Double(m.value) / t
                for i in 0..<row.count {
                    let v = clean(row[i])
                    if v > -.infinity { mass += exp(Double(v) / t - sMax) }
                }
            }
            let hi = Float(mass)
            let loPart = Float(mass - Double(hi))
            out.append(top.first?.value ?? -.infinity)
            out.append(hi)
            out.append(loPart)
            out.append(truncated ? 1 : 0)
            return out
        case .gumbelGlobalMax:
            return [localTopK(row, firstId: firstId, count: 1).first?.value ?? -.infinity]
        case .gumbelMax:
            let s = request.settings
            let t = Double(s.temperature)
            let minP = Double(s.minP)
            let sMax = Double(globalMax) / t
            var best: Candidate?
            for i in 0..<row.count {
                let v = clean(row[i])
                if v == -.infinity { continue }
                if minP > 0 && exp(Double(v) / t - sMax) < minP { continue }
                let c = Candidate(value: SamplingNoise.score(logit: v, id: firstId + i, temperature: s.temperature, key: key),
                                  id: Int32(firstId + i))
                if best == nil || c.precedes(best!) { best = c }
            }
            return [best?.value ?? -.infinity, Float(best?.id ?? -1)]
        }
    }

    /// Consumes one round's records (one slice per rank, rank order); returns the id when done.
    mutating func absorb(_ perRank: [ArraySlice<Float>], rowIndex: Int) throws -> Int32? {
        switch phase {
        case .greedy, .gumbelMax:
            var best: Candidate?
            for rec in perRank {
                let c = try candidate(rec, at: 0)
                if c.id >= 0 && (best == nil || c.precedes(best!)) { best = c }
            }
            guard let best else { throw SamplingError.noCandidates(row: rowIndex) }
            done = true
            return best.id
        case .gumbelGlobalMax:
            globalMax = perRank.map { $0[$0.startIndex] }.max() ?? -.infinity
            guard globalMax > -.infinity else { throw SamplingError.noCandidates(row: rowIndex) }
            phase = .gumbelMax
            return nil
        case let .topK(k):
            let merged = try merge(perRank, pairs: k).prefix(Int(request.settings.topK))
            guard let chosen = drawFromSorted(Array(merged), settings: request.settings, key: key) else {
                throw SamplingError.noCandidates(row: rowIndex)
            }
            done = true
            return chosen.id
        case let .nucleus(c):
            let merged = try merge(perRank, pairs: c)
            guard let top = merged.first else { throw SamplingError.noCandidates(row: rowIndex) }
            let t = Double(request.settings.temperature)
            // Total softmax mass relative to the global max, summed in rank order.
            var z = 0.0
            for rec in perRank {
                let base = rec.startIndex + 2 * c
                let localMax = rec[base]
                guard localMax > -.infinity else { continue }
                let mass = Double(rec[base + 1]) + Double(rec[base + 2])
                z += mass * exp(Double(localMax) / t - Double(top.value) / t)
            }
            // Only the first c merged entries are the exact global top-c (a rank may hold more
            // of the true top-c than it sent otherwise); complete when no rank was truncated.
            let complete = perRank.allSatisfy { $0[$0.startIndex + 2 * c + 3] == 0 }
            let exact = complete ? merged : Array(merged.prefix(c))
            var cumulative = 0.0
            var reached = false
            let p = Double(request.settings.topP)
            for cand in exact {
                cumulative += exp(Double(cand.value) / t - Double(top.value) / t) / z
                if cumulative >= p { reached = true; break }
            }
            if !reached && !complete {
                phase = .nucleus(c * 8)
                return nil
            }
            guard let chosen = drawFromSorted(exact, settings: request.settings, key: key, totalMass: z) else {
                throw SamplingError.noCandidates(row: rowIndex)
            }
            done = true
            return chosen.id
        }
    }

    private func candidate(_ rec: ArraySlice<Float>, at i: Int) throws -> Candidate {
        let base = rec.startIndex + 2 * i
        guard base + 1 < rec.endIndex else { throw SamplingError.malformedRecord("record too short") }
        let idFloat = rec[base + 1]
        guard idFloat.isFinite, idFloat >= -1, idFloat < Float(vocabulary), idFloat == idFloat.rounded() else {
            throw SamplingError.malformedRecord("bad token id \(idFloat)")
        }
        return Candidate(value: rec[base], id: Int32(idFloat))
    }

    /// Merges every rank's best-first pair lists into one best-first list (padding dropped).
    private func merge(_ perRank: [ArraySlice<Float>], pairs count: Int) throws -> [Candidate] {
        var all: [Candidate] = []
        all.reserveCapacity(perRank.count * count)
        for rec in perRank {
            for i in 0..<count {
                let c = try candidate(rec, at: i)
                if c.id < 0 { break }
                all.append(c)
            }
        }
        all.sort { $0.precedes($1) }
        return all
    }

    private func pairs(_ cands: [Candidate], padTo count: Int) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(2 * count + 3)
        for c in cands { out.append(c.value); out.append(Float(c.id)) }
        for _ in cands.count..<count { out.append(-.infinity); out.append(-1) }
        return out
    }
}

// MARK: - Log-probabilities

/// One id with its log-probability under the model's distribution.
public struct TokenLogprob: Sendable, Equatable {
    public var id: Int32
    public var logprob: Double
    public init(id: Int32, logprob: Double) { self.id = id; self.logprob = logprob }
}

/// The log-probabilities of one draw: the chosen id's and the `top.count` most likely ids',
/// best first. They are of the distribution the model gives, log-softmax of the raw logits
/// over the sampleable vocabulary, before temperature, top-k, top-p and min-p (as OpenAI's
/// `logprobs`), so they do not depend on the sampling settings.
public struct TokenLogprobs: Sendable, Equatable {
    public var chosen: TokenLogprob
    public var top: [TokenLogprob]
    public init(chosen: TokenLogprob, top: [TokenLogprob]) { self.chosen = chosen; self.top = top }
}

/// The log-softmax of vocab-parallel logits without gathering the vocabulary. Each rank sends
/// one record per row: its local max m_r, its local mass s_r = sum exp(x - m_r) (as hi + lo
/// floats, about 48 bits), the chosen id's logit if it owns that id (else -inf) and its local
/// top-k (logit, id) pairs. Every rank then forms the normaliser
/// log Z = M + log(sum_r s_r exp(m_r - M)) with M = max_r m_r, summing in rank order (the
/// all-reduce of max and sum, done inside the same one allGather as the top-k records), so
/// every rank gets bit-identical values; the merged lists are the exact global top-k.
enum LogprobExchange {
    static func recordLength(top: Int) -> Int { 4 + 2 * top }

    /// This rank's record for one row (`row` is the sampleable part of its slice, ids from `firstId`).
    static func record(row: UnsafeBufferPointer<Float>, firstId: Int, chosen: Int32, top: Int) -> [Float] {
        var localMax = -Float.infinity
        for i in 0..<row.count { let v = clean(row[i]); if v > localMax { localMax = v } }
        var mass = 0.0
        if localMax > -.infinity {
            let m = Double(localMax)
            for i in 0..<row.count {
                let v = clean(row[i])
                if v > -.infinity { mass += exp(Double(v) - m) }
            }
        }
        let hi = Float(mass)
        let lo = Float(mass - Double(hi))
        let c = Int(chosen) - firstId
        let chosenLogit: Float = c >= 0 && c < row.count ? clean(row[c]) : -.infinity
        var out: [Float] = [localMax, hi, lo, chosenLogit]
        out.reserveCapacity(recordLength(top: top))
        let best = localTopK(row, firstId: firstId, count: top)
        for b in best { out.append(b.value); out.append(Float(b.id)) }
        for _ in best.count..<top { out.append(-.infinity); out.append(-1) }
        return out
    }

    /// Combines the records of every rank (rank order) into the row's log-probabilities.
    static func combine(_ perRank: [ArraySlice<Float>], chosen: Int32, top: Int, vocabulary: Int,
                        rowIndex: Int) throws -> TokenLogprobs {
        var globalMax = -Float.infinity
        for rec in perRank {
            guard rec.count == recordLength(top: top) else {
                throw SamplingError.malformedRecord("logprob record of \(rec.count) floats, expected \(recordLength(top: top))")
            }
            globalMax = max(globalMax, rec[rec.startIndex])
        }
        guard globalMax > -.infinity else { throw SamplingError.noCandidates(row: rowIndex) }
        var z = 0.0
        var chosenLogit = -Float.infinity
        var all: [Candidate] = []
        for rec in perRank {
            let b = rec.startIndex
            if rec[b] > -.infinity {
                z += (Double(rec[b + 1]) + Double(rec[b + 2])) * exp(Double(rec[b]) - Double(globalMax))
            }
            chosenLogit = max(chosenLogit, rec[b + 3])
            for i in 0..<top {
                let v = rec[b + 4 + 2 * i], idFloat = rec[b + 5 + 2 * i]
                if idFloat < 0 { break }
                guard idFloat.isFinite, idFloat < Float(vocabulary), idFloat == idFloat.rounded() else {
                    throw SamplingError.malformedRecord("bad token id \(idFloat) in a logprob record")
                }
                all.append(Candidate(value: v, id: Int32(idFloat)))
            }
        }
        guard z > 0 else { throw SamplingError.noCandidates(row: rowIndex) }
        let logZ = Double(globalMax) + log(z)
        all.sort { $0.precedes($1) }
        let topList = all.prefix(top).map { TokenLogprob(id: $0.id, logprob: Double($0.value) - logZ) }
        return TokenLogprobs(chosen: TokenLogprob(id: chosen, logprob: Double(chosenLogit) - logZ), top: Array(topList))
    }
}
