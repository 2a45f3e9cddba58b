// `Communicator` over Open MPI: the only Swift code that calls MPI. Every return code goes
// through `check`, which throws `CommunicatorError.transport` with MPI's own error string
// (the communicator uses MPI_ERRORS_RETURN, so errors come back instead of aborting).
import CMPI
import Foundation
import GemmaParallel

/// Open MPI's view of this process: rank and size in MPI_COMM_WORLD, collectives on a private
/// duplicate of it.
///
/// One instance per process (MPI can be initialised only once). Started without `mpirun`
/// it is a world of one (MPI singleton init). MPI is initialised with
/// `MPI_THREAD_SERIALIZED`, and every call is made under one lock, so calls may come from any
/// thread (Swift's async code can hop threads) while MPI only ever sees one at a time.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    // @unchecked: `comm` and the counters are only touched while holding `lock`.
    public let rank: Int
    public let size: Int
    /// MPI's processor name for this rank (normally the host name).
    public let processorName: String
    /// The thread level MPI granted (MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE).
    public let providedThreadLevel: Int32

    private let lock = NSLock()
    private var comm: MPI_Comm?
    private var finalized = false

    /// Upper bound of the sleep between `MPI_Test` polls while waiting idle, in microseconds.
    /// 1 ms keeps an idle rank near 5% of a core (measured: docs/ARCHITECTURE.md) and adds
    /// at most ~1 ms latency to the first step after an idle period.
    public static let idleMaxSleepMicroseconds: UInt32 = 1000
    /// How long to poll without sleeping before the back-off starts, in seconds: in the busy
    /// decode loop the next plan usually arrives within this window (the coordinator is only
    /// sampling), so a worker does not pay a sleep's latency on every token.
    static let idleSpinSeconds = 250e-6

    nonisolated(unsafe) private static var created = false
    private static let creationLock = NSLock()

    /// As many ranks on this host as it has online CPUs, or more (the README's `mpirun -n 4` on
    /// a 2-core box): Open MPI's collectives busy-poll by default, so a waiting rank holds a core
    /// that the rank it waits for, or anything else on the box, needs. Measured on 2 cores,
    /// 1 thread per rank: 4 ranks decode at 0.7 tok/s polling and 12.9 with
    /// `mpi_yield_when_idle` (all-reduce 1410 -> 43 ms per step); 2 ranks at load average 3-4,
    /// 13.5 and 5.6 tok/s polling, 20.4 and 21.5 yielding. So it is turned on then, before
    /// MPI_Init reads it, unless the user set OMPI_MCA_mpi_yield_when_idle (0 keeps polling).
    /// With a spare core per host (e.g. one rank per machine) polling is left alone.
    static func yieldWhenOversubscribed() {
        let env = ProcessInfo.processInfo.environment
        guard env["OMPI_MCA_mpi_yield_when_idle"] == nil,
              let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap({ Int($0) }) else { return }
        if local > 1 && local >= ProcessInfo.processInfo.activeProcessorCount {
            setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0)
        }
    }

    /// Initialises MPI (or joins an existing initialisation) and duplicates MPI_COMM_WORLD.
    /// Throws `CommunicatorError.transport` if MPI fails or grants too low a thread level.
    public init() throws {
        try Self.creationLock.withLock {
            if Self.created {
                throw CommunicatorError.transport(operation: "MPICommunicator.init", code: -1,
                                                  message: "only one MPICommunicator per process")
            }
            Self.created = true
        }
        var initialized: Int32 = 0
        try Self.check(MPI_Initialized(&initialized), "MPI_Initialized")
        var provided: Int32 = 0
        if initialized == 0 {
            Self.yieldWhenOversubscribed()
            try Self.check(MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided),
                           "MPI_Init_thread")
        } else {
            try Self.check(MPI_Query_thread(&provided), "MPI_Query_thread")
        }
        // Errors on world come back as codes from here on (the default aborts the job).
        try Self.check(MPI_Comm_set_errhandler(gn_comm_world(), gn_errors_return()), "MPI_Comm_set_errhandler")
        guard provided >= Int32(MPI_THREAD_SERIALIZED) else {
            throw CommunicatorError.transport(operation: "MPI_Init_thread", code: provided,
                                              message: "MPI granted thread level \(provided); need MPI_THREAD_SERIALIZED")
        }
        providedThreadLevel = provided
        var dup: MPI_Comm?
        try Self.check(MPI_Comm_dup(gn_comm_world(), &dup), "MPI_Comm_dup")
        try Self.check(MPI_Comm_set_errhandler(dup, gn_errors_return()), "MPI_Comm_set_errhandler")
        comm = dup
        var r: Int32 = 0, s: Int32 = 0
        try Self.check(MPI_Comm_rank(dup, &r), "MPI_Comm_rank")
        try Self.check(MPI_Comm_size(dup, &s), "MPI_Comm_size")
        rank = Int(r)
        size = Int(s)
        var name = [CChar](repeating: 0, count: 512)  // MPI_MAX_PROCESSOR_NAME is 256
        var length: Int32 = 0
        try Self.check(MPI_Get_processor_name(&name, &length), "MPI_Get_processor_name")
        processorName = String(decoding: name.prefix(Int(max(0, length))).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// True when this process was started by Open MPI's launcher (mpirun/orted), i.e. it is
    /// one rank of a real job rather than a stand-alone process.
    public static var isLaunchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil
    }

    /// Line-buffers stdout: under mpirun it is a pipe, fully buffered by default, so rank
    /// output would otherwise arrive late and out of order.
    public static func lineBufferStandardOutput() {
        gn_line_buffer_stdout()
    }

    /// Frees the communicator and finalises MPI. Idempotent; later collectives throw.
    public func finalize() throws {
        try lock.withLock {
            if finalized { return }
            finalized = true
            if comm != nil {
                try Self.check(MPI_Comm_free(&comm), "MPI_Comm_free")
            }
            var done: Int32 = 0
            try Self.check(MPI_Finalized(&done), "MPI_Finalized")
            if done == 0 { try Self.check(MPI_Finalize(), "MPI_Finalize") }
        }
    }

    /// Fatal path that must not leave other ranks hanging in a collective: prints `message`
    /// to stderr and aborts the whole job (mpirun then stops every rank).
    public func abort(_ message: String, exitCode: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("gemma-node: rank \(rank) of \(size): fatal: \(message)\n".utf8))
        // Deliberately no lock: another thread may hold it while stuck in a collective.
        _ = MPI_Abort(gn_comm_world(), exitCode)
        exit(exitCode)
    }

    /// Makes one deliberately invalid MPI call (a barrier on MPI_COMM_NULL) through the same
    /// checked path as every other call and returns the error it produced, or nil if MPI
    /// accepted it. Lets tests prove errors come back typed, with MPI's text, not as aborts.
    public func probeErrorPath() -> Error? {
        do {
            try lock.withLock { try Self.check(MPI_Barrier(gn_comm_null()), "MPI_Barrier(MPI_COMM_NULL)") }
            return nil
        } catch {
            return error
        }
    }

    // MARK: collectives

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try allReduce(buffer, op: gn_op_sum(), name: "MPI_Allreduce(sum)")
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try allReduce(buffer, op: gn_op_max(), name: "MPI_Allreduce(max)")
    }

    /// In-place all-reduce. Lengths are not cross-checked here (this is the per-layer hot
    /// path); callers guarantee equal lengths by the `Communicator` contract.
    private func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: MPI_Op?, name: String) throws {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        try withComm(name) { comm in
            var offset = 0
            while offset < buffer.count {  // MPI counts are Int32: split huge buffers
                let n = min(buffer.count - offset, Self.maxCount)
                try Self.check(MPI_Allreduce(gn_in_place(), base + offset, Int32(n), gn_float(), op, comm), name)
                offset += n
            }
        }
    }

    /// Variable-length broadcast: the length (8 bytes) first, then the payload. With `idle`
    /// the length is received with MPI_Ibcast + MPI_Test and a sleeping back-off, so a worker
    /// waiting for its next plan does not spin a core (a blocked MPI_Bcast spins at 100%).
    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        guard root >= 0 && root < size else {
            throw CommunicatorError.transport(operation: "broadcast", code: -1, message: "root \(root) outside 0..<\(size)")
        }
        return try withComm("broadcast") { comm in
            var length = Int64(rank == root ? bytes.count : 0)
            try withUnsafeMutableBytes(of: &length) { raw in
                if idle {
                    var request: MPI_Request? = gn_request_null()
                    try Self.check(MPI_Ibcast(raw.baseAddress, 8, gn_byte(), Int32(root), comm, &request), "MPI_Ibcast")
                    if rank == root {
                        // The sender is never idle: sleeping here only delays the step.
                        try Self.check(MPI_Wait(&request, gn_status_ignore()), "MPI_Wait")
                    } else {
                        try Self.waitSleeping(&request)
                    }
                } else {
                    try Self.check(MPI_Bcast(raw.baseAddress, 8, gn_byte(), Int32(root), comm), "MPI_Bcast(length)")
                }
            }
            guard length >= 0, length <= Int64(Int32.max) * 64 else {
                throw CommunicatorError.transport(operation: "broadcast", code: -1, message: "implausible message length \(length)")
            }
            var payload = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length))
            try payload.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                var offset = 0
                while offset < raw.count {
                    let n = min(raw.count - offset, Self.maxCount)
                    try Self.check(MPI_Bcast(base + offset, Int32(n), gn_byte(), Int32(root), comm), "MPI_Bcast(payload)")
                    offset += n
                }
            }
            return payload
        }
    }

    /// Gathers one record per rank to every rank. Record lengths are cross-checked first
    /// (one tiny all-reduce) so a mismatch is a typed error on every rank, not a truncation.
    public func allGather(_ record: [Float]) throws -> [Float] {
        try withComm("allGather") { comm in
            var bounds: [Int64] = [Int64(record.count), -Int64(record.count)]
            try Self.check(MPI_Allreduce(gn_in_place(), &bounds, 2, gn_int64(), gn_op_max(), comm), "MPI_Allreduce(lengths)")
            let longest = Int(bounds[0]), shortest = Int(-bounds[1])
            guard longest == shortest else {
                throw CommunicatorError.transport(operation: "allGather", code: -1,
                                                  message: "record lengths differ across ranks (\(shortest) to \(longest); this rank \(record.count))")
            }
            guard record.count <= Self.maxCount / max(size, 1) else {
                throw CommunicatorError.transport(operation: "allGather", code: -1, message: "record of \(record.count) floats too large")
            }
            var out = [Float](repeating: 0, count: record.count * size)
            try record.withUnsafeBufferPointer { send in
                try out.withUnsafeMutableBufferPointer { recv in
                    try Self.check(MPI_Allgather(send.baseAddress, Int32(record.count), gn_float(),
                                                 recv.baseAddress, Int32(record.count), gn_float(), comm), "MPI_Allgather")
                }
            }
            return out
        }
    }

    /// MPI_Allgather of bytes; the record length is trusted (the `Communicator` contract),
    /// since this is the per-layer path of compact sum all-reduces.
    public func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        guard result.count == record.count * size else {
            throw CommunicatorError.mismatchedLength(operation: "allGatherBytes", expected: record.count * size, got: result.count)
        }
        guard record.count <= Self.maxCount / max(size, 1) else {
            throw CommunicatorError.transport(operation: "allGatherBytes", code: -1, message: "record of \(record.count) bytes too large")
        }
        guard record.count > 0 else { return }
        try withComm("MPI_Allgather(bytes)") { comm in
            try Self.check(MPI_Allgather(record.baseAddress, Int32(record.count), gn_byte(),
                                         result.baseAddress, Int32(record.count), gn_byte(), comm), "MPI_Allgather(bytes)")
        }
    }

    /// MPI_Send / MPI_Recv of the length (8 bytes), then the payload in pieces of at most
    /// `maxCount` bytes; ranks other than `from` and `to` return at once.
    public func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8] {
        guard from >= 0, from < size, to >= 0, to < size else {
            throw CommunicatorError.transport(operation: "deliver", code: -1, message: "ranks \(from) -> \(to) outside 0..<\(size)")
        }
        if from == to || (rank != from && rank != to) { return rank == from ? bytes : [] }
        return try withComm("deliver") { comm in
            let tag: Int32 = 7101
            if rank == from {
                var length = Int64(bytes.count)
                try Self.check(MPI_Send(&length, 1, gn_int64(), Int32(to), tag, comm), "MPI_Send(length)")
                try bytes.withUnsafeBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    var offset = 0
                    while offset < raw.count {
                        let n = min(raw.count - offset, Self.maxCount)
                        try Self.check(MPI_Send(base + offset, Int32(n), gn_byte(), Int32(to), tag, comm), "MPI_Send(payload)")
                        offset += n
                    }
                }
                return bytes
            }
            var length: Int64 = 0
            try Self.check(MPI_Recv(&length, 1, gn_int64(), Int32(from), tag, comm, gn_status_ignore()), "MPI_Recv(length)")
            guard length >= 0, length <= Int64(Int32.max) * 64 else {
                throw CommunicatorError.transport(operation: "deliver", code: -1, message: "implausible message length \(length)")
            }
            var payload = [UInt8](repeating: 0, count: Int(length))
            try payload.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                var offset = 0
                while offset < raw.count {
                    let n = min(raw.count - offset, Self.maxCount)
                    try Self.check(MPI_Recv(base + offset, Int32(n), gn_byte(), Int32(from), tag, comm, gn_status_ignore()), "MPI_Recv(payload)")
                    offset += n
                }
            }
            return payload
        }
    }

    public func barrier() throws {
        try withComm("MPI_Barrier") { comm in try Self.check(MPI_Barrier(comm), "MPI_Barrier") }
    }

    // MARK: plumbing

    /// MPI counts are `int`; larger messages are split into pieces of this many elements.
    static let maxCount = 1 << 30

    private func withComm<T>(_ operation: String, _ body: (MPI_Comm?) throws -> T) throws -> T {
        try lock.withLock {
            guard !finalized, let comm else {
                throw CommunicatorError.transport(operation: operation, code: -1, message: "MPI already finalized")
            }
            return try body(comm)
        }
    }

    /// Polls `request` to completion: `MPI_Test` without sleeping for `idleSpinSeconds`,
    /// then sleeps doubling from 50 us up to `idleMaxSleepMicroseconds`.
    private static func waitSleeping(_ request: inout MPI_Request?) throws {
        var flag: Int32 = 0
        let spinUntil = MPI_Wtime() + idleSpinSeconds
        var sleep: UInt32 = 50
        while true {
            try check(MPI_Test(&request, &flag, gn_status_ignore()), "MPI_Test")
            if flag != 0 { return }
            if MPI_Wtime() > spinUntil {
                usleep(sleep)
                sleep = min(sleep * 2, idleMaxSleepMicroseconds)
            }
        }
    }

    /// The one place MPI return codes are checked: anything but MPI_SUCCESS becomes a typed
    /// error carrying MPI's own description of the code.
    static func check(_ code: Int32, _ operation: String) throws {
        if code == MPI_SUCCESS { return }
        throw CommunicatorError.transport(operation: operation, code: code, message: errorString(code))
    }

    static func errorString(_ code: Int32) -> String {
        var text = [CChar](repeating: 0, count: 512)  // MPI_MAX_ERROR_STRING is 256
        var length: Int32 = 0
        guard MPI_Error_string(code, &text, &length) == MPI_SUCCESS else { return "unknown MPI error \(code)" }
        return String(decoding: text.prefix(Int(max(0, length))).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
