// `inspect --fit 8,8,16` and `inspect --machines 8`: choosing a `--split` so that every
// machine holds its rank's weights, the KV cache of the stated context and a fixed
// per-process overhead. The split itself is always ShardPlan's (whole heads, whole
// quantization blocks, KV heads kept with their queries); this file only chooses the shares
// and checks the resulting plan, rank by rank, against each machine's memory.
import Foundation

/// A rank's planned bytes against its machine.
public struct RankFit: Codable, Sendable, Equatable {
    public var rank: Int
    /// The machine's memory in bytes.
    public var capacityBytes: Int
    public var weightBytes: Int
    public var kvCacheBytes: Int
    /// Activation buffers of one full step (`RankReport.activationBytes`).
    public var activationBytes: Int
    public var overheadBytes: Int
    /// weights + KV cache + activations + overhead.
    public var plannedBytes: Int { weightBytes + kvCacheBytes + activationBytes + overheadBytes }
    /// Bytes the machine lacks (0 when it fits).
    public var shortBytes: Int { max(0, plannedBytes - capacityBytes) }
}

/// The answer of a fit: the shares to pass to `--split` and every rank's planned bytes, or,
/// when no split fits, the closest plan found and the machines it leaves short.
public struct MemoryFit: Codable, Sendable {
    public var fits: Bool
    /// Shares in rank order (the smallest is 1), as printed for `--split`.
    public var shares: [Double]
    public var report: ShardReport
    public var ranks: [RankFit]
    public var contextTokens: Int
    /// Machines that cannot hold even the smallest share ShardPlan can give (one head and one
    /// block of every dimension, plus everything replicated) — no split helps them.
    public var tooSmall: [RankFit]

    /// `shares` as `--split` wants them: numbers with up to 4 significant digits.
    public var splitText: String { shares.map(Self.format).joined(separator: ",") }

    public static func format(_ x: Double) -> String {
        var s = String(format: "%.4g", x)
        if s.contains("e") { s = String(format: "%.0f", x) }
        return s
    }

    /// Rounds shares to what `splitText` prints (smallest share 1, 4 significant digits), so
    /// the plan that is checked is the plan the printed `--split` gives.
    static func printable(_ w: [Double]) -> [Double] {
        let smallest = w.min() ?? 1
        return w.map { Double(format($0 / smallest)) ?? $0 / smallest }
    }

    /// Fits one rank per machine of `capacities` bytes (rank order). `plan(shares)` plans the
    /// model at those shares (ShardReport for a file or a config); its errors (a split
    /// ShardPlan refuses) are rethrown.
    ///
    /// Method: a rank's bytes are close to F + V * w_r / sum(w), F what every rank holds
    /// whatever its share (replicated tensors, one unit of each dimension) and V what is
    /// split. F and V come from the 1-rank and the equal-share plans; the shares that leave
    /// every machine the same fraction of its room are w_r = C_r - overhead - F. Whole heads
    /// and blocks then move a rank's bytes a little off that line, so up to 24 corrections
    /// shrink the share of any rank over its machine by its overshoot and re-plan.
    public static func fit(capacities: [Int], overheadBytes: Int, contextTokens: Int,
                           plan: ([Double]) throws -> ShardReport) throws -> MemoryFit {
        let n = capacities.count
        precondition(n >= 1, "fit needs at least one machine")
        func rankFits(_ report: ShardReport) -> [RankFit] {
            report.perRank.enumerated().map { r, rank in
                RankFit(rank: r, capacityBytes: capacities[r], weightBytes: rank.weightBytes,
                        kvCacheBytes: rank.kvCacheBytes(contextTokens: contextTokens, slidingRing: report.slidingRing),
                        activationBytes: rank.activationBytes, overheadBytes: overheadBytes)
            }
        }
        func make(_ shares: [Double], _ report: ShardReport, tooSmall: [RankFit] = []) -> MemoryFit {
            let fits = rankFits(report)
            return MemoryFit(fits: fits.allSatisfy { $0.shortBytes == 0 }, shares: shares, report: report, ranks: fits,
                             contextTokens: contextTokens, tooSmall: tooSmall)
        }
        if n == 1 {
            let report = try plan([1])
            return make([1], report)
        }
        let equal = try plan([Double](repeating: 1, count: n))
        let one = try plan([1])
        let need = { (f: RankFit) in Double(f.plannedBytes - f.overheadBytes) }
        let whole = need(rankFits(one)[0])
        let meanEqual = rankFits(equal).map(need).reduce(0, +) / Double(n)
        let variable = max(0, (whole - meanEqual) * Double(n) / Double(n - 1))
        let fixed = max(0, whole - variable)
        // Room each machine has for its split part; a machine with none still gets the
        // smallest share, and the check below says it is short.
        let room = capacities.map { Double($0 - overheadBytes) - fixed }
        let smallestRoom = max(room.filter { $0 > 0 }.min() ?? 1, 1)
        var weights = room.map { max($0, smallestRoom * 1e-3) }
        var best: MemoryFit?
        for _ in 0..<24 {
            let shares = printable(weights)
            let attempt = make(shares, try plan(shares))
            if attempt.fits { return attempt }
            let worst = attempt.ranks.map(\.shortBytes).max() ?? 0
            if best == nil || worst < best!.ranks.map(\.shortBytes).max()! { best = attempt }
            // Shrink every over-full rank's split part by its overshoot (a little more, so
            // the rounding of the next plan does not land it just over again).
            var changed = false
            for f in attempt.ranks where f.shortBytes > 0 {
                let part = Double(f.plannedBytes - overheadBytes) - fixed
                let allowed = part - Double(f.shortBytes) - 0.001 * part
                guard part > 0, allowed > 0 else { continue }
                weights[f.rank] = weights[f.rank] * allowed / part
                changed = true
            }
            if !changed { break }
        }
        // No split fits: say which machines cannot hold even the smallest share.
        var tooSmall: [RankFit] = []
        for r in 0..<n {
            var w = [Double](repeating: 1, count: n)
            w[r] = 1e-6
            let smallest = rankFits(try plan(w))[r]
            if smallest.shortBytes > 0 { tooSmall.append(smallest) }
        }
        let closest = best!
        return MemoryFit(fits: false, shares: closest.shares, report: closest.report, ranks: closest.ranks,
                         contextTokens: contextTokens, tooSmall: tooSmall)
    }

    /// The fewest machines of `capacity` bytes each (1 ... maxMachines) that a fit finds a
    /// split for; nil when none up to maxMachines does. Rank counts ShardPlan cannot split
    /// (fewer heads than ranks) are skipped, as are counts whose total memory is below the
    /// 1-rank need.
    public static func fewestMachines(capacity: Int, overheadBytes: Int, contextTokens: Int, maxMachines: Int = 64,
                                      plan: ([Double]) throws -> ShardReport) throws -> MemoryFit? {
        let one = try plan([1])
        let r0 = one.perRank[0]
        let whole = r0.weightBytes + r0.kvCacheBytes(contextTokens: contextTokens, slidingRing: one.slidingRing) + r0.activationBytes
        for n in 1...max(1, maxMachines) {
            if n * (capacity - overheadBytes) < whole { continue }
            guard let attempt = try? fit(capacities: [Int](repeating: capacity, count: n), overheadBytes: overheadBytes,
                                         contextTokens: contextTokens, plan: plan) else { continue }
            if attempt.fits { return attempt }
        }
        return nil
    }

    /// Human-readable answer: the split and one line per machine, or what is short.
    public var text: String {
        // MB below 0.1 GB, so that a small shortfall does not print as 0.00 GB.
        func gb(_ b: Int) -> String { b < 100_000_000 ? String(format: "%.1f MB", Double(b) / 1e6) : String(format: "%.2f GB", Double(b) / 1e9) }
        var lines: [String] = []
        if fits {
            lines.append("fits: --split \(splitText)")
        } else {
            let short = ranks.filter { $0.shortBytes > 0 }
            lines.append("does not fit: " + short.map { "machine \($0.rank) (\(gb($0.capacityBytes))) is short by \(gb($0.shortBytes))" }.joined(separator: ", ")
                         + (tooSmall.isEmpty ? " with the closest split found (--split \(splitText))" : ""))
            let total = ranks.reduce(0) { $0 + $1.plannedBytes } - ranks.reduce(0) { $0 + $1.capacityBytes }
            if total > 0 { lines.append("  in all the machines lack \(gb(total)): add memory or a machine") }
            for f in tooSmall {
                lines.append("  machine \(f.rank) (\(gb(f.capacityBytes))) cannot hold even the smallest share (\(gb(f.plannedBytes)): one head and one block of each dimension plus everything replicated); leave it out")
            }
        }
        lines.append("per rank (weights + \(report.kvType) KV cache of \(contextTokens) tokens + activations of a full step + \(gb(ranks.first?.overheadBytes ?? 0)) process overhead) against its machine:")
        for f in ranks {
            lines.append("  rank \(f.rank): \(gb(f.plannedBytes)) of \(gb(f.capacityBytes)) (weights \(gb(f.weightBytes)), KV \(gb(f.kvCacheBytes)), activations \(gb(f.activationBytes)))"
                         + (f.shortBytes > 0 ? ", short by \(gb(f.shortBytes))" : ", \(gb(f.capacityBytes - f.plannedBytes)) free"))
        }
        return lines.joined(separator: "\n")
    }
}
