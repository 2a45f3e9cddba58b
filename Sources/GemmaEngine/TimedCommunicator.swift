// A `Communicator` decorator that forwards every collective to another and adds up the time
// spent in each kind, so the server (/metrics) and `bench` can split a step into compute,
// all-reduce and plan wait without the model or the engine knowing. Wrap the communicator
// before loading the model with it, so the model's all-reduces pass through it.
import Foundation
import GemmaParallel

/// Forwards every collective to `inner` and times it. Used from the engine thread only (as
/// every communicator is); the totals are read on that thread too.
public final class TimedCommunicator: Communicator, @unchecked Sendable {
    public let inner: any Communicator
    /// Nanoseconds inside `allReduceSum`: the model's tensor-parallel merges (the only
    /// collective inside a forward pass), including the wait for the slowest rank.
    public private(set) var allReduceSumNanos: UInt64 = 0
    /// Nanoseconds in idle broadcasts: waiting for the next step plan (on workers, the
    /// coordinator's sampling and scheduling; on rank 0, the send).
    public private(set) var planWaitNanos: UInt64 = 0
    /// How many sum all-reduces ran, and the bytes of their buffers (each rank's payload).
    public private(set) var allReduceSumCalls: UInt64 = 0
    public private(set) var allReduceSumBytes: UInt64 = 0
    /// Nanoseconds in every other collective: `allReduceMax`, blocking broadcasts,
    /// `allGather`, `barrier` (agreements and the sampling exchange).
    public private(set) var otherCollectiveNanos: UInt64 = 0

    public init(_ inner: any Communicator) { self.inner = inner }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }

    /// `allReduceSumNanos` in seconds.
    public var allReduceSumSeconds: Double { Double(allReduceSumNanos) / 1e9 }

    private enum Kind { case sum, planWait, other }

    @inline(__always) private func timed<T>(_ kind: Kind, _ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer {
            let dt = DispatchTime.now().uptimeNanoseconds - t0
            switch kind {
            case .sum: allReduceSumNanos += dt
            case .planWait: planWaitNanos += dt
            case .other: otherCollectiveNanos += dt
            }
        }
        return try body()
    }

    private func countSum(_ count: Int) {
        allReduceSumCalls += 1
        // The bytes this rank sends: the compact payload's under `--sync-type bf16|q8_0`.
        allReduceSumBytes += UInt64((inner as? SyncPayloadCommunicator)?.payloadBytes(count: count)
                                    ?? count * MemoryLayout<Float>.stride)
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        countSum(buffer.count)
        try timed(.sum) { try inner.allReduceSum(buffer) }
    }
    /// Counted at the start; the time is the start's plus the wait's (the part of the merge
    /// the computation did not hide).
    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
        countSum(buffer.count)
        let pending = try timed(.sum) { try inner.startAllReduceSum(buffer) }
        return PendingCollective { [self] in try timed(.sum) { try pending.wait() } }
    }
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try timed(.other) { try inner.allReduceMax(buffer) } }
    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        try timed(idle ? .planWait : .other) { try inner.broadcast(bytes, root: root, idle: idle) }
    }
    public func allGather(_ record: [Float]) throws -> [Float] { try timed(.other) { try inner.allGather(record) } }
    public func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        try timed(.other) { try inner.allGatherBytes(record, into: result) }
    }
    public func barrier() throws { try timed(.other) { try inner.barrier() } }
    public func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8] {
        try timed(.other) { try inner.deliver(bytes, from: from, to: to) }
    }
}
