// An in-process communicator: N ranks as N threads sharing one rendezvous, for fast
// multi-rank unit tests without mpirun. It follows the `Communicator` contract exactly
// (same call order on every rank, same result everywhere) but makes no attempt to be fast.
import Foundation

/// N ranks running as threads of one process, synchronised through shared memory.
///
/// Every collective is a rendezvous: each rank deposits its contribution, the last rank to
/// arrive combines them once (sums in rank order, so every rank receives bit-identical
/// results) and wakes the others. If a rank's body throws inside `run`, the group is aborted
/// and every rank blocked in (or later entering) a collective throws
/// `CommunicatorError.aborted`, so a failure never hangs the other threads.
public final class LocalCommunicator: Communicator, @unchecked Sendable {
    // @unchecked: `rank`/`size` are immutable; all mutable state lives in `group`, guarded by its lock.
    public let rank: Int
    public let size: Int
    private let group: LocalGroup

    init(rank: Int, group: LocalGroup) {
        self.rank = rank
        self.size = group.size
        self.group = group
    }

    /// Runs `body` on `ranks` threads, each with its own rank's communicator, and returns the
    /// results in rank order. If any rank throws, the others are released from their
    /// collectives and the error of the lowest failing rank is rethrown (preferring an
    /// original error over the `aborted` errors it caused on other ranks).
    public static func run<T: Sendable>(
        ranks: Int, _ body: @escaping @Sendable (LocalCommunicator) throws -> T
    ) throws -> [T] {
        guard ranks >= 1 else {
            throw CommunicatorError.transport(operation: "LocalCommunicator.run", code: -1,
                                              message: "need at least one rank, got \(ranks)")
        }
        let group = LocalGroup(size: ranks)
        let outcomes = OutcomeBox<T>(count: ranks)
        let done = DispatchGroup()
        for r in 0..<ranks {
            done.enter()
            let thread = Thread {
                let comm = LocalCommunicator(rank: r, group: group)
                do {
                    outcomes.set(r, .success(try body(comm)))
                } catch {
                    outcomes.set(r, .failure(error))
                    group.abort("rank \(r) failed: \(error)")
                }
                done.leave()
            }
            thread.name = "local-rank-\(r)"
            thread.stackSize = 8 << 20  // model code may recurse into deep kernels; 8 MiB like a main thread
            thread.start()
        }
        done.wait()
        let results = outcomes.take()
        var firstAborted: Error?
        for result in results {
            if case let .failure(error) = result {
                if case CommunicatorError.aborted = error {
                    firstAborted = firstAborted ?? error
                } else {
                    throw error
                }
            }
        }
        if let firstAborted { throw firstAborted }
        return results.map { result in
            if case let .success(value) = result { return value }
            preconditionFailure("unreachable: failures were rethrown above")
        }
    }

    /// Aborts the whole group: every rank blocked in, or later entering, a collective throws
    /// `CommunicatorError.aborted(message)`.
    public func abort(_ message: String) {
        group.abort(message)
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try reduce(buffer, operation: "allReduceSum") { $0 + $1 }
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try reduce(buffer, operation: "allReduceMax") { Swift.max($0, $1) }
    }

    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        // `idle` needs no special handling: waiting ranks sleep on a condition variable.
        guard root >= 0 && root < size else {
            throw CommunicatorError.transport(operation: "broadcast", code: -1,
                                              message: "root \(root) outside 0..<\(size)")
        }
        let result = try group.collective(rank: rank, operation: "broadcast(root: \(root))",
                                          contribution: .bytes(rank == root ? bytes : [])) { slots in
            guard case let .bytes(payload) = slots[root] else { return .failure("broadcast: bad slot") }
            return .bytes(payload)
        }
        guard case let .bytes(payload) = result else { throw internalError("broadcast") }
        return payload
    }

    public func allGather(_ record: [Float]) throws -> [Float] {
        let result = try group.collective(rank: rank, operation: "allGather",
                                          contribution: .floats(record)) { slots in
            var out: [Float] = []
            out.reserveCapacity(slots.count * record.count)
            var expected = -1
            for (r, slot) in slots.enumerated() {
                guard case let .floats(values) = slot else { return .failure("allGather: bad slot") }
                if r == 0 { expected = values.count }
                if values.count != expected {
                    return .mismatch(operation: "allGather", expected: expected, got: values.count)
                }
                out.append(contentsOf: values)
            }
            return .floats(out)
        }
        guard case let .floats(values) = result else { throw internalError("allGather") }
        return values
    }

    public func barrier() throws {
        _ = try group.collective(rank: rank, operation: "barrier", contribution: .none) { _ in .none }
    }

    /// Element-wise reduction combined in rank order: ((r0 op r1) op r2) op ..., computed once.
    private func reduce(_ buffer: UnsafeMutableBufferPointer<Float>, operation: String,
                        _ combine: @escaping @Sendable (Float, Float) -> Float) throws {
        let result = try group.collective(rank: rank, operation: operation,
                                          contribution: .floats(Array(buffer))) { slots in
            guard case var .floats(acc) = slots[0] else { return .failure("\(operation): bad slot") }
            for slot in slots.dropFirst() {
                guard case let .floats(values) = slot else { return .failure("\(operation): bad slot") }
                if values.count != acc.count {
                    return .mismatch(operation: operation, expected: acc.count, got: values.count)
                }
                for i in acc.indices { acc[i] = combine(acc[i], values[i]) }
            }
            return .floats(acc)
        }
        guard case let .floats(values) = result, values.count == buffer.count else {
            throw internalError(operation)
        }
        for i in 0..<buffer.count { buffer[i] = values[i] }
    }

    private func internalError(_ operation: String) -> CommunicatorError {
        .transport(operation: operation, code: -1, message: "internal error: unexpected result kind")
    }
}

/// What one rank brings to, or takes from, a collective.
enum LocalPayload: Sendable {
    case none
    case floats([Float])
    case bytes([UInt8])
    /// Contributions had different lengths; every rank throws the same error.
    case mismatch(operation: String, expected: Int, got: Int)
    case failure(String)
}

/// Shared rendezvous state of one group. All fields are guarded by `condition`'s lock.
final class LocalGroup: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var slots: [LocalPayload]
    private var operations: [String]
    private var arrived = 0
    /// Bumped each time a collective completes; waiters watch it to know theirs is done.
    private var generation: UInt64 = 0
    private var result: LocalPayload = .none
    private var abortMessage: String?

    init(size: Int) {
        self.size = size
        slots = Array(repeating: .none, count: size)
        operations = Array(repeating: "", count: size)
    }

    func abort(_ message: String) {
        condition.lock()
        if abortMessage == nil { abortMessage = message }
        condition.broadcast()
        condition.unlock()
    }

    /// Deposits `contribution`; the last rank to arrive runs `combine` over all slots (in rank
    /// order) and publishes the result. The single result slot is safe to reuse: the next
    /// collective cannot complete before every rank has entered it, i.e. read this result.
    func collective(rank: Int, operation: String, contribution: LocalPayload,
                    combine: (_ slots: [LocalPayload]) -> LocalPayload) throws -> LocalPayload {
        condition.lock()
        defer { condition.unlock() }
        if let abortMessage { throw CommunicatorError.aborted(abortMessage) }
        let myGeneration = generation
        slots[rank] = contribution
        operations[rank] = operation
        arrived += 1
        if arrived == size {
            if let bad = operations.firstIndex(where: { $0 != operations[0] }) {
                result = .failure("collective mismatch: rank 0 called \(operations[0]), rank \(bad) called \(operations[bad])")
            } else {
                result = combine(slots)
            }
            for i in slots.indices { slots[i] = .none }
            arrived = 0
            generation &+= 1
            condition.broadcast()
        } else {
            while generation == myGeneration && abortMessage == nil {
                condition.wait()
            }
            if generation == myGeneration, let abortMessage {
                throw CommunicatorError.aborted(abortMessage)
            }
        }
        switch result {
        case let .mismatch(op, expected, got):
            throw CommunicatorError.mismatchedLength(operation: op, expected: expected, got: got)
        case let .failure(message):
            throw CommunicatorError.transport(operation: operation, code: -1, message: message)
        default:
            return result
        }
    }
}

/// Per-rank outcomes written by the rank threads and read after they have all finished.
private final class OutcomeBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var outcomes: [Result<T, Error>?]

    init(count: Int) { outcomes = Array(repeating: nil, count: count) }

    func set(_ rank: Int, _ outcome: Result<T, Error>) {
        lock.lock(); outcomes[rank] = outcome; lock.unlock()
    }

    func take() -> [Result<T, Error>] {
        lock.lock(); defer { lock.unlock() }
        return outcomes.map { $0 ?? .failure(CommunicatorError.aborted("rank produced no result")) }
    }
}
