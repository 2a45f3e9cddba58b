// The collective operations the engine needs, independent of how they are carried out.
// `GemmaMPI.MPICommunicator` implements them over Open MPI; `LocalCommunicator` runs N ranks
// as threads in one process for fast multi-rank tests. Nothing in this file knows MPI exists.

/// A group of ranks that compute one model together.
///
/// Contract for every collective: all ranks of the group call it in the same order with
/// buffers of the same length; it returns on every rank with the same result. Methods are
/// called from one thread per rank (the engine thread).
public protocol Communicator: AnyObject, Sendable {
    /// This process's rank, 0 ..< size. Rank 0 is the coordinator.
    var rank: Int { get }
    /// Number of ranks in the group.
    var size: Int { get }

    /// In-place element-wise sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Starts an in-place sum over all ranks and returns without waiting for it: the sum is
    /// in `buffer` once `wait()` of the result has returned, and nothing may read or write
    /// `buffer` before that. Every rank starts its sums in the same order and waits each one
    /// exactly once; several may be outstanding. Lets a prefill chunk's second half compute
    /// while the first half's merge travels (`GemmaShard`'s overlapped layer). A default
    /// (below) sums at once, which is correct for every transport, without overlap.
    func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective
    /// In-place element-wise maximum over all ranks.
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Broadcast a byte message of any length from `root`. `bytes` is ignored on other ranks.
    /// When `idle` is true the receiving ranks wait without spinning a core (used while
    /// waiting for the next step plan, which may take arbitrarily long).
    func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8]
    /// Gather one fixed-size record of floats from every rank to every rank:
    /// the result is `size * record.count` floats, rank r's record at `r * record.count`.
    func allGather(_ record: [Float]) throws -> [Float]
    /// Gather one fixed-size byte record from every rank to every rank: `result` receives
    /// `size * record.count` bytes, rank r's record at `r * record.count`. Every rank passes
    /// the same record length (not cross-checked: this carries the compact payloads of
    /// `SyncPayloadCommunicator`, once per layer). A default goes through `allGather`.
    func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws
    /// Block until every rank has arrived.
    func barrier() throws
    /// Point-to-point inside the collective order: every rank calls it with the same `from`
    /// and `to`; rank `to` returns the `bytes` rank `from` passed, `from` returns its own
    /// `bytes`, every other rank returns [] (MPI: a send and a receive, the rest do nothing).
    /// Used to stream each rank its own weight slices (`--weights-from-root`).
    func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8]
}

/// Errors raised by communicators and by the cluster-wide agreement helpers.
public enum CommunicatorError: Error, CustomStringConvertible, Equatable {
    /// A collective failed in the transport; `message` carries the transport's own text.
    case transport(operation: String, code: Int32, message: String)
    /// Another rank reported an error; every rank throws this with the same text.
    case remote(rank: Int, message: String)
    /// Buffers of different lengths were passed on different ranks.
    case mismatchedLength(operation: String, expected: Int, got: Int)
    /// The operation was cancelled because another rank aborted.
    case aborted(String)
    /// A rank stopped answering or exited while this one waited for it (`--step-timeout`);
    /// the message names it and says what this rank was waiting in. The transport is
    /// unusable afterwards: nothing more can be agreed, the job must end.
    case unresponsive(String)

    public var description: String {
        switch self {
        case let .transport(op, code, message): return "\(op) failed (code \(code)): \(message)"
        case let .remote(rank, message): return "rank \(rank): \(message)"
        case let .mismatchedLength(op, e, g): return "\(op): buffer length \(g) on this rank, \(e) on rank 0"
        case let .aborted(m): return "aborted: \(m)"
        case let .unresponsive(m): return m
        }
    }
}

/// A started collective (`Communicator.startAllReduceSum`); `wait()` completes it.
public struct PendingCollective {
    private let finish: () throws -> Void

    public init(wait finish: @escaping () throws -> Void) { self.finish = finish }

    /// Blocks until the collective has completed on this rank (its result is in place).
    public func wait() throws { try finish() }

    /// One that has already completed.
    public static var done: PendingCollective { PendingCollective {} }
}

extension Communicator {
    public var isCoordinator: Bool { rank == 0 }

    /// Transports without non-blocking sums: the sum is done before this returns.
    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
        try allReduceSum(buffer)
        return .done
    }

    /// `deliver` for transports without point-to-point: a broadcast that only `to` keeps.
    public func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8] {
        let all = try broadcast(bytes, root: from, idle: false)
        return rank == to || rank == from ? all : []
    }

    /// `allGatherBytes` for transports without a byte all-gather: the bytes packed four to a
    /// float (bit patterns only; nothing does arithmetic on them) through `allGather`.
    public func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        guard result.count == record.count * size else {
            throw CommunicatorError.mismatchedLength(operation: "allGatherBytes", expected: record.count * size, got: result.count)
        }
        let words = (record.count + 3) / 4
        var packed = [Float](repeating: 0, count: words)
        packed.withUnsafeMutableBytes { raw in
            for i in 0..<record.count { raw[i] = record[i] }
        }
        let gathered = try allGather(packed)
        gathered.withUnsafeBytes { raw in
            for r in 0..<size {
                for i in 0..<record.count { result[r * record.count + i] = raw[r * words * 4 + i] }
            }
        }
    }

    /// Cluster-wide agreement on success: every rank passes its local error (or nil); if any
    /// rank failed, every rank throws `CommunicatorError.remote` with the lowest failing
    /// rank's message, so all ranks report the same text and none hangs in a later
    /// collective. Call it after every step that can fail on some ranks only (loading,
    /// validating input).
    public func agree(_ localError: Error?) throws {
        // A peer that stopped answering cannot take part in an agreement: end here.
        if case CommunicatorError.unresponsive? = localError as? CommunicatorError { throw localError! }
        var flag: [Float] = [localError == nil ? Float(size) : Float(rank)]
        try flag.withUnsafeMutableBufferPointer { buffer in
            // min(failing rank) == -max(-rank); encode "no error" as size.
            buffer[0] = -buffer[0]
            try allReduceMax(buffer)
            buffer[0] = -buffer[0]
        }
        let firstFailing = Int(flag[0])
        if firstFailing >= size { return }
        // The failing rank sends "ORIGIN\nmessage". An error that is already an agreed
        // `.remote` (another rank's fault, e.g. the --sync-type check) keeps its origin and
        // text instead of gaining a second "rank R:" prefix.
        var text = ""
        if let localError, rank == firstFailing {
            if case let CommunicatorError.remote(origin, message)? = localError as? CommunicatorError {
                text = "\(origin)\n\(message)"
            } else {
                text = "\(rank)\n\(localError)"
            }
        }
        let bytes = try broadcast(Array(text.utf8), root: firstFailing, idle: false)
        let received = String(decoding: bytes, as: UTF8.self)
        let parts = received.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let origin = Int(parts[0]) else {
            throw CommunicatorError.remote(rank: firstFailing, message: received)
        }
        throw CommunicatorError.remote(rank: origin, message: String(parts[1]))
    }

    /// The coordinator's message for the next step (its plan) to every rank. Every rank calls
    /// it at the start of each step; rank 0 passes the message, the others anything (ignored).
    /// Workers may wait here arbitrarily long (an idle server), so they wait without spinning a
    /// core: the idle broadcast. Transports that pair only matching broadcast kinds (MPI pairs
    /// a non-blocking broadcast only with non-blocking ones) see the idle kind on every rank,
    /// because every rank comes through here. A world of one returns `message` unsent.
    public func broadcastPlan(_ message: [UInt8]) throws -> [UInt8] {
        guard size > 1 else { return message }
        return try broadcast(message, root: 0, idle: true)
    }

    /// Convenience: run `body` on every rank and agree on the outcome (see `agree`).
    public func agreeOn<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        var failure: Error?
        do { result = try body() } catch { failure = error }
        try agree(failure)
        return result!
    }
}
