// The sharded perplexity / KL reduction against a plain computation over the whole vocabulary,
// at 1, 2 and 3 ranks (LocalCommunicator), and the base file's format and its checks.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaParallel

/// Deterministic pseudo-random logits (xorshift), spread like an LM's: a few large values.
private func randomLogits(rows: Int, vocab: Int, seed: UInt64) -> [[Float]] {
    var s = seed | 1
    func next() -> Double {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17
        return Double(s >> 11) / Double(1 << 53)
    }
    return (0..<rows).map { _ in (0..<vocab).map { _ in Float(8 * pow(next(), 3) - 2 * next()) } }
}

private func logSoftmax(_ x: [Float], vocab: Int) -> [Double] {
    let m = x[0..<vocab].map(Double.init).max()!
    let z = m + log(x[0..<vocab].reduce(0.0) { $0 + exp(Double($1) - m) })
    return x[0..<vocab].map { Double($0) - z }
}

/// A base record of a full distribution: top K by log-prob, ties to the lower id.
private func record(_ x: [Float], vocab: Int, k: Int, target: Int) -> BaseRecord {
    let lp = logSoftmax(x, vocab: vocab)
    let order = (0..<vocab).sorted { lp[$0] > lp[$1] || (lp[$0] == lp[$1] && $0 < $1) }.prefix(k)
    let logZ = Double(x[0]) - lp[0]
    let inTop = Set(order)
    let tail = (0..<vocab).filter { !inTop.contains($0) }.reduce(0.0) { $0 + exp(lp[$1]) }
    return BaseRecord(logZ: Float(logZ), targetLogProb: Float(lp[target]), logTailMass: Float(log(tail)), ids: order.map { Int32($0) },
                      logProbs: order.map { Float(lp[$0]) })
}

@Suite struct PerplexityTests {
    // Vocabulary 1000 with 10 padding ids (990..<1000) that must be ignored, 6 positions.
    static let padded = 1000, vocab = 990, rows = 6, k = 16

    @Test(arguments: [1, 2, 3])
    func shardedScoresMatchTheWholeVocabulary(ranks: Int) throws {
        let mine = randomLogits(rows: Self.rows, vocab: Self.padded, seed: 7)
        var baseLogits = mine
        let noise = randomLogits(rows: Self.rows, vocab: Self.padded, seed: 99)
        for r in 0..<Self.rows { for i in 0..<Self.padded { baseLogits[r][i] += 0.3 * noise[r][i] } }
        // Padding logits larger than any real one: a sharded max that counted them would fail.
        for r in 0..<Self.rows { for i in Self.vocab..<Self.padded { baseLogits[r][i] = 50; } }
        var mineP = mine
        for r in 0..<Self.rows { for i in Self.vocab..<Self.padded { mineP[r][i] = 60 } }
        let targets: [Int32] = [3, 989, 0, 500, 17, 250]
        let base = (0..<Self.rows).map { record(baseLogits[$0], vocab: Self.vocab, k: Self.k, target: Int(targets[$0])) }
        let input = mineP

        let results = try LocalCommunicator.run(ranks: ranks) { comm -> [ScoredPosition] in
            let per = (Self.padded + ranks - 1) / ranks
            let range = (comm.rank * per)..<min(Self.padded, (comm.rank + 1) * per)
            var flat = [Float]()
            for r in 0..<Self.rows { flat += input[r][range] }
            return try flat.withUnsafeBufferPointer { buf in
                let rows = (0..<Self.rows).map { UnsafeBufferPointer(rebasing: buf[($0 * range.count)..<(($0 + 1) * range.count)]) }
                return try PerplexityScorer.score(rows: rows, range: range, vocab: Self.vocab, targets: targets,
                                                  base: base, keepTop: 5, comm: comm)
            }
        }
        // Every rank ends with the same numbers.
        for r in 1..<ranks { #expect(results[r] == results[0]) }

        for (r, got) in results[0].enumerated() {
            let lq = logSoftmax(mine[r], vocab: Self.vocab)
            let logZ = Double(mine[r][0]) - lq[0]
            // Sums of a few hundred exp terms in another order: 1e-12 relative is far above
            // the Double rounding (~1e-14) and far below any real difference.
            #expect(abs(got.logZ - logZ) <= 1e-12 * abs(logZ) + 1e-12)
            #expect(abs(got.nll + lq[Int(targets[r])]) <= 1e-11)
            let argmax = (0..<Self.vocab).max { lq[$0] < lq[$1] || (lq[$0] == lq[$1] && $0 > $1) }!
            #expect(Int(got.argmax) == argmax)
            #expect(got.top1Agrees == (Int(base[r].ids[0]) == argmax))
            // KL from the base's top K plus the merged tail, computed directly.
            let b = base[r]
            var kl = 0.0, d = 0.0
            let top = Set(b.ids.map(Int.init))
            let qT = (0..<Self.vocab).filter { !top.contains($0) }.reduce(0.0) { $0 + exp(lq[$1]) }
            for j in 0..<Self.k {
                let id = Int(b.ids[j]), lp = Double(b.logProbs[j])
                kl += exp(lp) * (lp - lq[id])
                if j < 10 { d += abs(Double(mine[r][id]) - (lp + Double(b.logZ))) }
            }
            let pT = exp(Double(b.logTailMass))
            kl += pT * log(pT / qT)
            kl += 1 - pT - b.logProbs.reduce(0.0) { $0 + exp(Double($1)) }
            #expect(abs(got.kl! - kl) <= 1e-10)
            #expect(abs(got.top10AbsDiff! - d / 10) <= 1e-9)
            // The merged-tail value never exceeds the full KL (log-sum inequality) against the
            // base's own full distribution rebuilt with the f32 log-probs' precision.
            let lpFull = logSoftmax(baseLogits[r], vocab: Self.vocab)
            let full = (0..<Self.vocab).reduce(0.0) { $0 + exp(lpFull[$1]) * (lpFull[$1] - lq[$1]) }
            #expect(got.kl! <= full + 1e-6)
            // This run's own top 5, ids and log-probs, and the mass outside them.
            let order = (0..<Self.vocab).sorted { lq[$0] > lq[$1] || (lq[$0] == lq[$1] && $0 < $1) }.prefix(5)
            #expect(got.top!.map { Int($0.id) } == Array(order))
            for (j, id) in order.enumerated() { #expect(abs(got.top![j].logProb - lq[id]) <= 1e-11) }
            let tail = 1 - order.reduce(0.0) { $0 + exp(lq[$1]) }
            #expect(abs(exp(got.logTailMass!) - tail) <= 1e-11)
        }
    }

    @Test func identicalDistributionsHaveZeroKL() throws {
        let x = randomLogits(rows: 2, vocab: 300, seed: 3)
        let base = (0..<2).map { record(x[$0], vocab: 300, k: 300, target: 1) }
        let got = try LocalCommunicator.run(ranks: 2) { comm -> [ScoredPosition] in
            let range = comm.rank == 0 ? 0..<120 : 120..<300
            let flat = x[0][range] + x[1][range]
            return try Array(flat).withUnsafeBufferPointer { buf in
                try PerplexityScorer.score(rows: [UnsafeBufferPointer(rebasing: buf[0..<range.count]),
                                                  UnsafeBufferPointer(rebasing: buf[range.count...])],
                                           range: range, vocab: 300, targets: [1, 1], base: base, keepTop: 0, comm: comm)
            }
        }[0]
        for p in got {
            // The base's log-probs are f32 (relative 6e-8): the KL of that rounding is second order, ~1e-14.
            #expect(abs(p.kl!) < 1e-12)
            #expect(p.top1Agrees == true)
            #expect(p.top10AbsDiff! < 1e-5)
        }
    }

    @Test func baseFileRoundTripsAndRejectsDamage() throws {
        let x = randomLogits(rows: 3, vocab: 50, seed: 11)
        let records = (0..<3).map { record(x[$0], vocab: 50, k: 4, target: 2) }
        let file = LogitsBase(vocab: 50, topK: 4, ctx: 4, chunks: 1, tokens: [2, 10, 11, 12], records: records)
        let bytes = file.encoded()
        #expect(bytes.count == 32 + 16 + 3 * LogitsBase.recordBytes(topK: 4))
        #expect(try LogitsBase(bytes: bytes) == file)

        func rejects(_ damaged: [UInt8], _ fragment: String) {
            do {
                _ = try LogitsBase(bytes: damaged)
                Issue.record("accepted a damaged file (\(fragment))")
            } catch {
                #expect(String(describing: error).contains(fragment), "\(error)")
            }
        }
        rejects(Array("not a file at all, just some text".utf8), "GNLOGITS")
        rejects(Array(bytes.dropLast()), "bytes")
        var version = bytes; version[8] = 2
        rejects(version, "version 2")
        var token = bytes; token[32] = 200  // token 200 >= vocabulary 50
        rejects(token, "outside the vocabulary")
        // Swap the first two log-probs of the first record: no longer descending.
        var order = bytes
        let at = 32 + 16 + 12
        for j in 0..<4 { order.swapAt(at + 4 + j, at + 12 + j) }
        rejects(order, "descending")
    }
}
