// A `Communicator` decorator that makes every collective take as long as it would over a
// network link of a chosen latency and bandwidth, for scaling experiments on one machine
// whose kernel cannot add delay (no sch_netem). It is an emulation: the collective itself
// still runs over the wrapped transport (shared memory or loopback TCP); afterwards every
// rank waits the modelled transfer time, so the time seen by the engine is the modelled
// time plus the local transport's own (a few microseconds at 2 ranks on one host).
import Foundation

/// A network link between every pair of ranks: one-way latency and bandwidth.
public struct EmulatedLink: Sendable, Equatable, CustomStringConvertible {
    /// One-way latency of one message, in seconds.
    public var latency: Double
    /// Bytes per second in each direction.
    public var bytesPerSecond: Double

    public init(latency: Double, bytesPerSecond: Double) {
        self.latency = latency
        self.bytesPerSecond = bytesPerSecond
    }

    /// Parses `LATENCY_US,GBIT` (for example `200,1` for 0.2 ms and 1 Gbit/s).
    public init(parsing text: String) throws {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 2, let us = Double(parts[0]), let gbit = Double(parts[1]),
              us.isFinite, gbit.isFinite, us >= 0, gbit > 0, us <= 1e7, gbit <= 1e4 else {
            throw EmulatedLinkError(text: text)
        }
        self.init(latency: us / 1e6, bytesPerSecond: gbit * 1e9 / 8)
    }

    public var description: String {
        String(format: "%.0f us, %.3g Gbit/s", latency * 1e6, bytesPerSecond * 8 / 1e9)
    }

    /// Whole messages needed to combine across `ranks` by recursive doubling (log2, rounded up).
    static func rounds(_ ranks: Int) -> Double { ranks <= 1 ? 0 : Double(Int.bitWidth - (ranks - 1).leadingZeroBitCount) }

    /// Modelled seconds for an all-reduce of `bytes` on every one of `ranks` ranks: the
    /// faster of recursive doubling (log2 N rounds, each a latency plus the whole vector) and
    /// the ring (2(N-1) steps, each a latency plus 1/N of the vector), as a tuned MPI chooses.
    public func allReduceSeconds(bytes: Int, ranks: Int) -> Double {
        guard ranks > 1 else { return 0 }
        let b = Double(bytes), n = Double(ranks)
        let doubling = Self.rounds(ranks) * (latency + b / bytesPerSecond)
        let ring = 2 * (n - 1) * (latency + b / n / bytesPerSecond)
        return min(doubling, ring)
    }

    /// Modelled seconds for a broadcast of `bytes` from one rank (binomial tree).
    public func broadcastSeconds(bytes: Int, ranks: Int) -> Double {
        Self.rounds(ranks) * (latency + Double(bytes) / bytesPerSecond)
    }

    /// Modelled seconds for an all-gather of one `bytes` record per rank (ring: N-1 steps).
    public func allGatherSeconds(bytes: Int, ranks: Int) -> Double {
        ranks <= 1 ? 0 : Double(ranks - 1) * (latency + Double(bytes) / bytesPerSecond)
    }

    /// Modelled seconds for a barrier (dissemination: log2 N rounds of one empty message).
    public func barrierSeconds(ranks: Int) -> Double { Self.rounds(ranks) * latency }
}

public struct EmulatedLinkError: Error, CustomStringConvertible {
    public let text: String
    public var description: String {
        "--emulate-link wants LATENCY_US,GBIT (latency 0...1e7 microseconds, bandwidth above 0 and at most 10000 Gbit/s), got \"\(text)\""
    }
}

/// Forwards every collective to `inner`, then holds it for the time `link` would take.
/// Every rank computes the same modelled time from the same arguments, so the ranks stay in
/// step. A broadcast waiting for the next step plan (`idle`) is not held: that wait is the
/// coordinator's idle time, not a transfer (the plan's own transfer is modelled as one
/// broadcast of its bytes when it arrives).
public final class EmulatedLinkCommunicator: Communicator, @unchecked Sendable {
    public let inner: any Communicator
    public let link: EmulatedLink
    /// Modelled seconds added so far (for reports).
    public private(set) var heldSeconds = 0.0

    /// Whether the spinning part of a hold gives the core away on every turn (sched_yield).
    /// Set when this host has no spare core (as many ranks as cores or more, the rule under
    /// which Open MPI's waits yield too): a plain spin then keeps the core from a rank that
    /// shares it, which a real network wait does not (4 ranks on 2 cores at 1 Gbit + 1 ms
    /// measured 186 ms of all-reduce per token against 75 modelled).
    public let yieldsWhileHolding: Bool

    public init(_ inner: any Communicator, link: EmulatedLink, yieldsWhileHolding: Bool = false) {
        self.inner = inner
        self.link = link
        self.yieldsWhileHolding = yieldsWhileHolding
    }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }

    /// Waits `seconds`. Waits up to 2 ms spin the whole time: a sleeping vCPU can take a
    /// few hundred microseconds to wake on a virtual machine, which made short holds 2-10x
    /// too long (docs/SCALING.md). Longer waits sleep all but their last millisecond, then
    /// spin to the deadline. Spinning keeps the core busy, so ranks that share cores
    /// (more ranks than cores) slow each other more than real network waits would, unless
    /// `yieldsWhileHolding`: then every turn of the spin yields the core to a runnable rank.
    private func hold(_ seconds: Double) {
        guard seconds > 0 else { return }
        heldSeconds += seconds
        hold(until: DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9))
    }

    private func hold(until deadline: UInt64) {
        let now = DispatchTime.now().uptimeNanoseconds
        guard deadline > now else { return }
        let sleepNanos = deadline - now <= 2_000_000 ? 0 : Int64(deadline - now) - 1_000_000
        if sleepNanos > 0 {
            var request = timespec(tv_sec: Int(sleepNanos / 1_000_000_000), tv_nsec: Int(sleepNanos % 1_000_000_000))
            var remaining = timespec()
            while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
        }
        if yieldsWhileHolding {
            while DispatchTime.now().uptimeNanoseconds < deadline { sched_yield() }
        } else {
            while DispatchTime.now().uptimeNanoseconds < deadline {}
        }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try inner.allReduceSum(buffer)
        hold(link.allReduceSeconds(bytes: buffer.count * MemoryLayout<Float>.size, ranks: size))
    }

    /// The link carries a started sum while the caller computes: `wait` returns no sooner
    /// than the modelled time after the start (and no sooner than the wrapped transport's
    /// own sum). This models a transport that moves the data in the background (Open MPI's
    /// TCP with its progress thread, or an RDMA NIC), measured against real TCP in
    /// docs/SCALING.md. It times from this rank's start; a real link starts when the last
    /// rank has started, so with unequal ranks it is slightly optimistic.
    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
        let seconds = link.allReduceSeconds(bytes: buffer.count * MemoryLayout<Float>.size, ranks: size)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        heldSeconds += seconds
        let pending = try inner.startAllReduceSum(buffer)
        return PendingCollective { [self] in
            try pending.wait()
            hold(until: deadline)
        }
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try inner.allReduceMax(buffer)
        hold(link.allReduceSeconds(bytes: buffer.count * MemoryLayout<Float>.size, ranks: size))
    }

    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        let result = try inner.broadcast(bytes, root: root, idle: idle)
        hold(link.broadcastSeconds(bytes: result.count, ranks: size))
        return result
    }

    /// One hop: latency plus the bytes at the link's rate, on the two ranks involved.
    public func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8] {
        let result = try inner.deliver(bytes, from: from, to: to)
        if from != to && (rank == from || rank == to) { hold(link.latency + Double(result.count) / link.bytesPerSecond) }
        return result
    }

    public func allGather(_ record: [Float]) throws -> [Float] {
        let result = try inner.allGather(record)
        hold(link.allGatherSeconds(bytes: record.count * MemoryLayout<Float>.size, ranks: size))
        return result
    }

    /// Held for an all-gather of the record's bytes: with `SyncPayloadCommunicator` outside
    /// this decorator, a compact sum all-reduce is held for the bytes it actually sends.
    public func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        try inner.allGatherBytes(record, into: result)
        hold(link.allGatherSeconds(bytes: record.count, ranks: size))
    }

    public func barrier() throws {
        try inner.barrier()
        hold(link.barrierSeconds(ranks: size))
    }
}
