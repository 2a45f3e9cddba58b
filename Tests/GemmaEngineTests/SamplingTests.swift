// Distributed sampling against a plain single-process reference over the concatenated logits,
// at 1, 2 and 4 ranks (LocalCommunicator), plus edge cases and a distribution check.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTestSupport
import GemmaWire

/// Reference sampler: sorts the whole vocabulary, then applies the filters in Hugging Face's
/// order (temperature, top-k, top-p, min-p) and takes the Gumbel-max draw. It shares only the
/// noise function with the code under test.
func referenceSample(_ logits: [Float], sampleable: Int, settings s: SamplingParams, step: UInt64) -> Int32? {
    var c: [(v: Float, id: Int)] = []
    for i in 0..<sampleable where !logits[i].isNaN && logits[i] > -.infinity { c.append((logits[i], i)) }
    c.sort { $0.v > $1.v || ($0.v == $1.v && $0.id < $1.id) }
    guard let first = c.first else { return nil }
    if s.temperature == 0 || s.topK == 1 { return Int32(first.id) }
    if s.topK > 0 { c = Array(c.prefix(Int(s.topK))) }
    let t = Double(s.temperature)
    let sTop = Double(first.v) / t
    if s.topP < 1 {
        let z = c.reduce(0.0) { $0 + exp(Double($1.v) / t - sTop) }
        var before = 0.0
        var kept: [(v: Float, id: Int)] = []
        for e in c {
            if !kept.isEmpty && before >= Double(s.topP) { break }
            before += exp(Double(e.v) / t - sTop) / z
            kept.append(e)
        }
        c = kept
    }
    if s.minP > 0 { c = c.filter { exp(Double($0.v) / t - sTop) >= Double(s.minP) } }
    let key = SamplingNoise.key(seed: s.seed, step: step)
    var best: (score: Float, id: Int)?
    for e in c {
        let score = SamplingNoise.score(logit: e.v, id: e.id, temperature: s.temperature, key: key)
        if best == nil || score > best!.score || (score == best!.score && e.id < best!.id) { best = (score, e.id) }
    }
    return best.map { Int32($0.id) }
}

/// Runs the distributed sampler at `ranks` ranks over rows of full logits, each rank seeing
/// only its contiguous vocabulary slice. Returns rank 0's ids after checking all ranks agree.
func distributedSample(rows: [[Float]], requests: [SampleRequest], sampleable: Int, ranks: Int,
                       initialNucleus: Int = 64) throws -> (ids: [Int32], stats: SamplingStats) {
    let vocab = rows[0].count
    let results = try LocalCommunicator.run(ranks: ranks) { comm -> [Int32] in
        let per = vocab / comm.size
        let range = (comm.rank * per)..<((comm.rank + 1) * per)
        var flat: [Float] = []
        for row in rows { flat.append(contentsOf: row[range]) }
        var sampler = DistributedSampler()
        sampler.initialNucleusCandidates = initialNucleus
        var stats = SamplingStats()
        return try flat.withUnsafeBufferPointer { buf in
            let slice = LogitsSlice(vocabRange: range, rows: rows.count, values: buf)
            var ids = try sampler.sample(requests, logits: slice, sampleableVocab: sampleable, comm: comm, stats: &stats)
            // Smuggle the stats out through rank 0's result.
            ids.append(Int32(stats.rounds))
            return ids
        }
    }
    for r in results { #expect(r == results[0], "ranks disagree") }
    var ids = results[0]
    var stats = SamplingStats()
    stats.rounds = Int(ids.removeLast())
    return (ids, stats)
}


func randomLogits(_ rng: inout SplitMix64, vocab: Int, style: Int) -> [Float] {
    var row = (0..<vocab).map { _ in rng.normal() * Float(1 + style) }
    switch style % 4 {
    case 1: // Coarse values: many exact ties.
        row = row.map { ($0 * 2).rounded() / 2 }
    case 2: // Some masked ids.
        for i in 0..<vocab where rng.next() % 5 == 0 { row[i] = -.infinity }
    case 3: // One dominant id.
        row[Int(rng.next() % UInt64(vocab))] += 12
    default: break
    }
    return row
}

let settingsGrid: [SamplingParams] = [
    SamplingParams(temperature: 0, topK: 64, topP: 0.95, minP: 0),
    SamplingParams(temperature: 1, topK: 64, topP: 0.95, minP: 0),
    SamplingParams(temperature: 0.7, topK: 5, topP: 1, minP: 0),
    SamplingParams(temperature: 1.3, topK: 40, topP: 0.5, minP: 0.05),
    SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 0),
    SamplingParams(temperature: 0.8, topK: 0, topP: 1, minP: 0.1),
    SamplingParams(temperature: 1, topK: 0, topP: 0.9, minP: 0),
    SamplingParams(temperature: 2, topK: 0, topP: 0.99, minP: 0.01),
    SamplingParams(temperature: 1, topK: 300, topP: 1, minP: 0),   // k above the vocabulary
    SamplingParams(temperature: 1, topK: 1, topP: 1, minP: 0),
    // Hot and narrow: the filters' exact boundaries decide most draws here.
    SamplingParams(temperature: 4, topK: 3, topP: 1, minP: 0),
    SamplingParams(temperature: 3, topK: 0, topP: 0.3, minP: 0),
]

@Suite struct SamplingTests {
    @Test(arguments: [1, 2, 4])
    func matchesReferenceOnRandomLogits(ranks: Int) throws {
        var rng = SplitMix64(seed: 42)
        let vocab = 256
        var rows: [[Float]] = []
        var requests: [SampleRequest] = []
        var expected: [Int32] = []
        for trial in 0..<240 {
            let settingsBase = settingsGrid[trial % settingsGrid.count]
            var s = settingsBase
            s.seed = rng.next()
            let step = rng.next() % 1000
            // Padding ids above `sampleable` must never be chosen.
            let row = randomLogits(&rng, vocab: vocab, style: trial / settingsGrid.count)
            rows.append(row)
            requests.append(SampleRequest(row: rows.count - 1, settings: s, stepIndex: step))
            expected.append(referenceSample(row, sampleable: 250, settings: s, step: step) ?? -1)
        }
        let (ids, _) = try distributedSample(rows: rows, requests: requests, sampleable: 250, ranks: ranks)
        #expect(ids == expected)
        #expect(ids.allSatisfy { $0 >= 0 && $0 < 250 })
    }

    @Test func sameSeedSameTokensAtAnyRankCount() throws {
        var rng = SplitMix64(seed: 7)
        let rows = (0..<30).map { _ in randomLogits(&rng, vocab: 128, style: 0) }
        let requests = rows.indices.map {
            SampleRequest(row: $0, settings: SamplingParams(temperature: 1, topK: 0, topP: 0.95, minP: 0, seed: 99), stepIndex: UInt64($0))
        }
        let one = try distributedSample(rows: rows, requests: requests, sampleable: 128, ranks: 1).ids
        let two = try distributedSample(rows: rows, requests: requests, sampleable: 128, ranks: 2).ids
        let four = try distributedSample(rows: rows, requests: requests, sampleable: 128, ranks: 4).ids
        #expect(one == two && two == four)
        // A different seed changes at least some draws (the seed is actually used).
        let other = requests.map { r -> SampleRequest in var r = r; r.settings.seed = 100; return r }
        #expect(try distributedSample(rows: rows, requests: other, sampleable: 128, ranks: 2).ids != one)
    }

    @Test(arguments: [1, 2, 4])
    func greedyTiesGoToLowestId(ranks: Int) throws {
        var row = [Float](repeating: 0, count: 64)
        row[50] = 3; row[17] = 3; row[40] = 3  // ties on different ranks at 2 and 4 ranks
        let r = [SampleRequest(row: 0, settings: .greedy, stepIndex: 0)]
        #expect(try distributedSample(rows: [row], requests: r, sampleable: 64, ranks: ranks).ids == [17])
        // Temperature 0 is greedy whatever the other settings.
        let t0 = [SampleRequest(row: 0, settings: SamplingParams(temperature: 0, topK: 0, topP: 0.3, minP: 0.2, seed: 5), stepIndex: 3)]
        #expect(try distributedSample(rows: [row], requests: t0, sampleable: 64, ranks: ranks).ids == [17])
    }

    @Test(arguments: [1, 2, 4])
    func topPEdges(ranks: Int) throws {
        var rng = SplitMix64(seed: 3)
        let rows = (0..<40).map { _ in randomLogits(&rng, vocab: 64, style: 0) }
        let argmax = rows.map { row in Int32(row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!) }
        // Tiny p keeps only the most likely id, with or without top-k.
        for k in [0, 10] {
            let tiny = rows.indices.map { SampleRequest(row: $0, settings: SamplingParams(temperature: 1, topK: Int32(k), topP: 1e-6, minP: 0, seed: UInt64($0)), stepIndex: 0) }
            #expect(try distributedSample(rows: rows, requests: tiny, sampleable: 64, ranks: ranks).ids == argmax)
        }
        // p = 1 is the same as no top-p: equals the reference with top-p off.
        let full = rows.indices.map { SampleRequest(row: $0, settings: SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 0, seed: UInt64($0)), stepIndex: 1) }
        let want = rows.indices.map { referenceSample(rows[$0], sampleable: 64, settings: full[$0].settings, step: 1)! }
        #expect(try distributedSample(rows: rows, requests: full, sampleable: 64, ranks: ranks).ids == want)
        // min-p = 1 keeps only ids as likely as the best one.
        let minP = rows.indices.map { SampleRequest(row: $0, settings: SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 1, seed: UInt64($0)), stepIndex: 2) }
        #expect(try distributedSample(rows: rows, requests: minP, sampleable: 64, ranks: ranks).ids == argmax)
    }

    @Test(arguments: [1, 2, 4])
    func nucleusSearchGrowsUntilExact(ranks: Int) throws {
        // A nearly flat distribution: p = 0.99 needs almost every id, far more than the first
        // 4 candidates per rank, so the search must run several rounds and still be exact.
        var rng = SplitMix64(seed: 11)
        let rows = (0..<8).map { _ in (0..<256).map { _ in rng.normal() * 0.1 } }
        let s = SamplingParams(temperature: 1, topK: 0, topP: 0.99, minP: 0, seed: 1234)
        let requests = rows.indices.map { SampleRequest(row: $0, settings: s, stepIndex: UInt64($0)) }
        let want = rows.indices.map { referenceSample(rows[$0], sampleable: 256, settings: s, step: UInt64($0))! }
        let got = try distributedSample(rows: rows, requests: requests, sampleable: 256, ranks: ranks, initialNucleus: 4)
        #expect(got.ids == want)
        #expect(got.stats.rounds >= 3)
    }

    @Test func localTopKEqualsAFullSort() {
        var rng = SplitMix64(seed: 5)
        for style in 0..<4 {
            let row = randomLogits(&rng, vocab: 3000, style: style)
            var all: [Candidate] = []
            for (i, v) in row.enumerated() where v > -.infinity { all.append(Candidate(value: v, id: Int32(100 + i))) }
            all.sort { $0.precedes($1) }
            // Both the insertion window (k <= 64) and the heap (k > 64), and k beyond the row.
            for k in [1, 2, 64, 65, 300, 2999, 5000] {
                let got = row.withUnsafeBufferPointer { localTopK($0, firstId: 100, count: k) }
                #expect(got == Array(all.prefix(k)), "style \(style), k \(k)")
            }
        }
    }

    @Test func drawsFollowTheSoftmax() throws {
        // 20,000 draws from softmax([0, 1, 2, 3] / 0.8); each frequency's standard deviation is
        // at most sqrt(0.25 / 20000) = 0.0035, so 0.015 is over 4 sigma: a wrong distribution
        // (e.g. a missing temperature, or noise that is not Gumbel) fails, a right one passes.
        let logits: [Float] = [0, 1, 2, 3]
        let n = 20_000
        let requests = (0..<n).map { SampleRequest(row: 0, settings: SamplingParams(temperature: 0.8, topK: 0, topP: 1, minP: 0, seed: UInt64($0)), stepIndex: 0) }
        let ids = try distributedSample(rows: [logits], requests: requests, sampleable: 4, ranks: 2).ids
        var counts = [0, 0, 0, 0]
        for id in ids { counts[Int(id)] += 1 }
        let e = logits.map { exp(Double($0) / 0.8) }
        let z = e.reduce(0, +)
        for i in 0..<4 {
            #expect(abs(Double(counts[i]) / Double(n) - e[i] / z) < 0.015, "id \(i): \(counts[i]) of \(n)")
        }
    }

    @Test func rejectsBadSettingsAndEmptyRows() throws {
        let row: [Float] = [.nan, -.infinity, -.infinity, -.infinity]
        let greedy = [SampleRequest(row: 0, settings: .greedy, stepIndex: 0)]
        #expect(throws: SamplingError.noCandidates(row: 0)) {
            try distributedSample(rows: [row], requests: greedy, sampleable: 4, ranks: 2)
        }
        let bad = [SampleRequest(row: 0, settings: SamplingParams(temperature: -1), stepIndex: 0)]
        #expect(throws: PlanError.self) {
            try distributedSample(rows: [[0, 1]], requests: bad, sampleable: 2, ranks: 1)
        }
    }
}

// MARK: - Log-probabilities

/// Log-softmax of the first `sampleable` logits in Double (-inf for -inf/NaN ids): the
/// reference the sharded computation must equal.
func referenceLogSoftmax(_ row: [Float], sampleable: Int) -> [Double] {
    let kept = row[0..<sampleable].map { $0.isNaN ? -Double.infinity : Double($0) }
    let m = kept.max() ?? -.infinity
    let z = kept.reduce(0.0) { $0 + ($1 > -.infinity ? exp($1 - m) : 0) }
    return kept.map { $0 - (m + log(z)) }
}

/// One rank's draws and log-probabilities.
struct LogprobRun: Sendable, Equatable {
    var ids: [Int32]
    var logprobs: [TokenLogprobs?]
}

/// The sampler's ids and log-probabilities at `ranks` ranks (contiguous slices); checks that
/// every rank got bit-identical results.
func distributedLogprobs(rows: [[Float]], requests: [SampleRequest], sampleable: Int,
                         ranks: Int) throws -> (ids: [Int32], logprobs: [TokenLogprobs?]) {
    let vocab = rows[0].count
    let results = try LocalCommunicator.run(ranks: ranks) { comm -> LogprobRun in
        let per = vocab / comm.size
        let range = (comm.rank * per)..<((comm.rank + 1) * per)
        var flat: [Float] = []
        for row in rows { flat.append(contentsOf: row[range]) }
        var stats = SamplingStats()
        return try flat.withUnsafeBufferPointer { buf in
            let slice = LogitsSlice(vocabRange: range, rows: rows.count, values: buf)
            let (ids, lps) = try DistributedSampler().sampleWithLogprobs(requests, logits: slice, sampleableVocab: sampleable,
                                                                       comm: comm, stats: &stats)
            return LogprobRun(ids: ids, logprobs: lps)
        }
    }
    for r in results { #expect(r == results[0], "ranks disagree") }
    return (results[0].ids, results[0].logprobs)
}

@Suite struct LogprobTests {
    /// Random rows (ties, masked ids, one dominant id) under every sampling setting, at 1, 2
    /// and 4 ranks: the chosen id's and the top-k's log-probabilities equal the log-softmax of
    /// the full row (padding ids above `sampleable` excluded), and the top-k ids are the
    /// reference's best-first order (ties to the lower id).
    @Test(arguments: [1, 2, 4])
    func equalLogSoftmaxOfTheFullRow(ranks: Int) throws {
        var rng = SplitMix64(seed: 99)
        let vocab = 256, sampleable = 250
        var rows: [[Float]] = []
        var requests: [SampleRequest] = []
        for trial in 0..<80 {
            var s = settingsGrid[trial % settingsGrid.count]
            s.seed = rng.next()
            rows.append(randomLogits(&rng, vocab: vocab, style: trial / settingsGrid.count))
            let top = [0, 1, 5, 20][trial % 4]
            requests.append(SampleRequest(row: rows.count - 1, settings: s, stepIndex: rng.next() % 100,
                                          logprobs: trial % 9 == 8 ? nil : top))
        }
        let (ids, lps) = try distributedLogprobs(rows: rows, requests: requests, sampleable: sampleable, ranks: ranks)
        // The ids are those of the sampler without logprobs (the extra round changes nothing).
        #expect(ids == (try distributedSample(rows: rows, requests: requests, sampleable: sampleable, ranks: ranks).ids))
        for (i, r) in requests.enumerated() {
            guard let top = r.logprobs else { #expect(lps[i] == nil); continue }
            let lp = try #require(lps[i])
            let ref = referenceLogSoftmax(rows[r.row], sampleable: sampleable)
            // Tolerance 1e-9: both sides are Double from the same Float logits; they differ
            // only in summation order and each rank's mass travelling as a hi + lo Float pair
            // (about 2^-48 relative), i.e. ~1e-14 here.
            #expect(lp.chosen.id == ids[i])
            #expect(abs(lp.chosen.logprob - ref[Int(ids[i])]) < 1e-9, "row \(i)")
            let order = ref.indices.filter { ref[$0] > -.infinity }
                .sorted { ref[$0] > ref[$1] || (ref[$0] == ref[$1] && $0 < $1) }
            #expect(lp.top.map(\.id) == order.prefix(top).map { Int32($0) }, "row \(i)")
            for a in lp.top { #expect(abs(a.logprob - ref[Int(a.id)]) < 1e-9) }
            if r.settings.isGreedy, let best = lp.top.first {
                // Temperature 0: the chosen token is the most likely one.
                #expect(best.id == lp.chosen.id && lp.chosen.logprob == best.logprob)
            }
        }
    }

    /// The values are of the model's distribution: the same row gives the same numbers under
    /// any temperature and filter.
    @Test func independentOfSamplingSettings() throws {
        var rng = SplitMix64(seed: 5)
        let row = randomLogits(&rng, vocab: 128, style: 0)
        let requests = settingsGrid.enumerated().map { i, s in
            SampleRequest(row: 0, settings: s, stepIndex: UInt64(i), logprobs: 4)
        }
        let (_, lps) = try distributedLogprobs(rows: [row], requests: requests, sampleable: 128, ranks: 2)
        let tops = lps.map { $0?.top }
        #expect(tops.allSatisfy { $0 == tops[0] })
    }

    @Test func refusesMoreThanTwentyAlternatives() throws {
        let row = [Float](repeating: 0, count: 64)
        #expect(throws: SamplingError.self) {
            try distributedLogprobs(rows: [row], requests: [SampleRequest(row: 0, settings: .greedy, stepIndex: 0, logprobs: 21)],
                                    sampleable: 64, ranks: 1)
        }
    }
}
