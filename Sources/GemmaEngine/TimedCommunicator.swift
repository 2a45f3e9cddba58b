// A `Communicator` that forwards to another and adds up the time spent in each kind of
// collective, so the server can split a step's forward pass into compute and all-reduce time
// without the model knowing. Wrap the communicator before loading the model with it.
import Foundation
import GemmaParallel

/// Forwards every collective to `inner` and times it. Used from the engine thread only (as
/// every communicator is); the totals are read on that thread too.
public final class TimedCommunicator: Communicator, @unchecked Sendable {
    public let inner: any Communicator
    /// Seconds inside `allReduceSum` (the model's tensor-parallel merges).
    public private(set) var allReduceSumSeconds = 0.0
    /// Seconds inside `allReduceMax`, `broadcast`, `allGather` and `barrier`.
    public private(set) var otherCollectiveSeconds = 0.0

    public init(_ inner: any Communicator) { self.inner = inner }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }

    @inline(__always) private func timed<T>(_ sum: Bool, _ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer {
            let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if sum { allReduceSumSeconds += s } else { otherCollectiveSeconds += s }
        }
        return try body()
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try timed(true) { try inner.allReduceSum(buffer) } }
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try timed(false) { try inner.allReduceMax(buffer) } }
    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        try timed(false) { try inner.broadcast(bytes, root: root, idle: idle) }
    }
    public func allGather(_ record: [Float]) throws -> [Float] { try timed(false) { try inner.allGather(record) } }
    public func barrier() throws { try timed(false) { try inner.barrier() } }
}
