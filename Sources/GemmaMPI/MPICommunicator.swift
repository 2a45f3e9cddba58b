// `Communicator` over Open MPI: the only Swift code that calls MPI. Every return code goes
// through `check`, which throws `CommunicatorError.transport` with MPI's own error string
// (the communicator uses MPI_ERRORS_RETURN, so errors come back instead of aborting).
//
// Every collective is non-blocking and polled (`waitBounded`), so no wait is unbounded: with
// `stepTimeout` set, a wait that lasts that long probes every other rank on a second
// duplicated communicator; a rank that does not answer within `probeWindow` is named in a
// `CommunicatorError.unresponsive` (docs/RELIABILITY.md, "Stuck and dead ranks").
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
    /// Side communicator for liveness probes, so a probe never matches collective traffic.
    private var probeComm: MPI_Comm?
    private var finalized = false
    /// Seconds a wait may last before the other ranks are probed; 0 = no bound.
    private var timeout: Double = 0
    /// Set once a peer was found stuck or dead: every later call throws it.
    private var brokenMessage: String?
    /// When the last wait in MPI ended (MPI_Wtime), for the idle liveness check.
    private var lastActivity: Double = 0
    /// Called (on the answering thread) when that thread found a peer stuck or dead while
    /// the engine was outside MPI, e.g. an idle server: lets `serve` turn /health to 503 and
    /// stop at once instead of at the next request. Set with `onPeerFailure`.
    private var peerFailureHandler: (@Sendable (String) -> Void)?
    /// The other ranks on this host (same processor name) and their process ids.
    private var localPeers: [(rank: Int, pid: Int32)] = []

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
        if size > 1 {
            var side: MPI_Comm?
            try Self.check(MPI_Comm_dup(gn_comm_world(), &side), "MPI_Comm_dup")
            try Self.check(MPI_Comm_set_errhandler(side, gn_errors_return()), "MPI_Comm_set_errhandler")
            probeComm = side
            // Every rank's pid and host, so a rank on the same host that exits is seen at once.
            var mine: [Int64] = [Int64(getpid()), Int64(bitPattern: Self.fnv1a(processorName))]
            var all = [Int64](repeating: 0, count: 2 * size)
            try Self.check(MPI_Allgather(&mine, 2, gn_int64(), &all, 2, gn_int64(), dup), "MPI_Allgather(pids)")
            localPeers = (0..<size).filter { $0 != rank && all[2 * $0 + 1] == mine[1] }.map { ($0, Int32(truncatingIfNeeded: all[2 * $0])) }
            startAnswering()
        }
    }

    /// Bounds every later wait (see `waitBounded`); 0 or less waits forever.
    public func setStepTimeout(_ seconds: Double) {
        lock.withLock { timeout = seconds > 0 ? seconds : 0 }
    }

    /// Sets the handler called when the answering thread finds a peer stuck or dead while
    /// the engine thread is outside MPI (see `startAnswering`).
    public func onPeerFailure(_ handler: @escaping @Sendable (String) -> Void) {
        lock.withLock { peerFailureHandler = handler }
    }

    /// The message of the failure that broke the communicator (a peer stuck or dead), if any.
    public var failureMessage: String? { lock.withLock { brokenMessage } }

    /// FNV-1a of a string: a host id that is the same in every process (Swift's `hashValue` is
    /// seeded per process).
    static func fnv1a(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
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
            if probeComm != nil {
                answerProbes()
                try Self.check(MPI_Comm_free(&probeComm), "MPI_Comm_free")
            }
            var done: Int32 = 0
            try Self.check(MPI_Finalized(&done), "MPI_Finalized")
            if done == 0 { try Self.check(MPI_Finalize(), "MPI_Finalize") }
        }
    }

    /// Fatal path that must not leave other ranks hanging in a collective: prints `message`
    /// to stderr and aborts the whole job (mpirun then stops every rank).
    /// `linger` seconds pass between the two, during which the answering thread keeps
    /// answering probes, so other live ranks that are still probing do not name this one.
    public func abort(_ message: String, exitCode: Int32 = 1, linger: Double = 0) -> Never {
        FileHandle.standardError.write(Data("gemma-node: rank \(rank) of \(size): fatal: \(message)\n".utf8))
        if linger > 0 { usleep(UInt32(linger * 1e6)) }
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
        try allReduce(buffer, op: gn_op_sum(), name: "all-reduce (sum)")
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try allReduce(buffer, op: gn_op_max(), name: "all-reduce (max)")
    }

    /// MPI_Iallreduce, waited for (polled within the step timeout, as `allReduceSum`) by the
    /// returned `wait`. Buffers beyond one MPI count are summed at once instead. Whether the
    /// data moves before `wait` depends on the transport: TCP with
    /// `--mca btl_tcp_progress_thread 1` moves it in the background; shared memory copies it
    /// inside `wait` (docs/SCALING.md, overlap).
    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .done }
        guard buffer.count <= Self.maxCount else {
            try allReduceSum(buffer)
            return .done
        }
        let name = "all-reduce (sum)"
        let pending = PendingRequest()
        try withComm(name) { comm in
            try Self.check(MPI_Iallreduce(gn_in_place(), base, Int32(buffer.count), gn_float(), gn_op_sum(), comm, &pending.request), name)
        }
        return PendingCollective { [self] in
            try withComm(name) { _ in try waitBounded(&pending.request, name, sleeping: false) }
        }
    }

    /// In-place all-reduce. Lengths are not cross-checked here (this is the per-layer hot
    /// path); callers guarantee equal lengths by the `Communicator` contract.
    private func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: MPI_Op?, name: String) throws {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        try withComm(name) { comm in
            try inPieces(buffer.count, name, sleeping: false) { offset, n, request in
                try Self.check(MPI_Iallreduce(gn_in_place(), base + offset, n, gn_float(), op, comm, &request), name)
            }
        }
    }

    /// Variable-length broadcast: the length (8 bytes) first, then the payload. With `idle`
    /// the receivers poll with a sleeping back-off, so a worker waiting for its next plan does
    /// not spin a core (a blocked MPI_Bcast spins at 100%).
    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        guard root >= 0 && root < size else {
            throw CommunicatorError.transport(operation: "broadcast", code: -1, message: "root \(root) outside 0..<\(size)")
        }
        let what = idle ? "the plan broadcast from rank \(root)" : "a broadcast from rank \(root)"
        return try withComm(what) { comm in
            var length = Int64(rank == root ? bytes.count : 0)
            try withUnsafeMutableBytes(of: &length) { raw in
                var request: MPI_Request? = gn_request_null()
                try Self.check(MPI_Ibcast(raw.baseAddress, 8, gn_byte(), Int32(root), comm, &request), "MPI_Ibcast(length)")
                // The sender is never idle: sleeping there would only delay the step.
                try waitBounded(&request, what, sleeping: idle && rank != root)
            }
            guard length >= 0, length <= Int64(Int32.max) * 64 else {
                throw CommunicatorError.transport(operation: "broadcast", code: -1, message: "implausible message length \(length)")
            }
            var payload = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length))
            try payload.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                try inPieces(raw.count, what, sleeping: false) { offset, n, request in
                    try Self.check(MPI_Ibcast(base + offset, n, gn_byte(), Int32(root), comm, &request), "MPI_Ibcast(payload)")
                }
            }
            return payload
        }
    }

    /// Gathers one record per rank to every rank. Record lengths are cross-checked first
    /// (one tiny all-reduce) so a mismatch is a typed error on every rank, not a truncation.
    public func allGather(_ record: [Float]) throws -> [Float] {
        try withComm("all-gather") { comm in
            var bounds: [Int64] = [Int64(record.count), -Int64(record.count)]
            try bounds.withUnsafeMutableBufferPointer { b in
                var request: MPI_Request? = gn_request_null()
                try Self.check(MPI_Iallreduce(gn_in_place(), b.baseAddress, 2, gn_int64(), gn_op_max(), comm, &request),
                               "MPI_Iallreduce(lengths)")
                try waitBounded(&request, "all-gather (lengths)", sleeping: false)
            }
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
                    var request: MPI_Request? = gn_request_null()
                    try Self.check(MPI_Iallgather(send.baseAddress, Int32(record.count), gn_float(),
                                                  recv.baseAddress, Int32(record.count), gn_float(), comm, &request), "MPI_Iallgather")
                    try waitBounded(&request, "all-gather", sleeping: false)
                }
            }
            return out
        }
    }

    /// MPI_Iallgather of bytes; the record length is trusted (the `Communicator` contract),
    /// since this is the per-layer path of compact sum all-reduces.
    public func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        guard result.count == record.count * size else {
            throw CommunicatorError.mismatchedLength(operation: "allGatherBytes", expected: record.count * size, got: result.count)
        }
        guard record.count <= Self.maxCount / max(size, 1) else {
            throw CommunicatorError.transport(operation: "allGatherBytes", code: -1, message: "record of \(record.count) bytes too large")
        }
        guard record.count > 0 else { return }
        try withComm("all-gather (bytes)") { comm in
            var request: MPI_Request? = gn_request_null()
            try Self.check(MPI_Iallgather(record.baseAddress, Int32(record.count), gn_byte(),
                                          result.baseAddress, Int32(record.count), gn_byte(), comm, &request), "MPI_Iallgather(bytes)")
            try waitBounded(&request, "all-gather (bytes)", sleeping: false)
        }
    }

    /// MPI_Isend / MPI_Irecv of the length (8 bytes), then the payload in pieces of at most
    /// `maxCount` bytes; ranks other than `from` and `to` return at once.
    public func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8] {
        guard from >= 0, from < size, to >= 0, to < size else {
            throw CommunicatorError.transport(operation: "deliver", code: -1, message: "ranks \(from) -> \(to) outside 0..<\(size)")
        }
        if from == to || (rank != from && rank != to) { return rank == from ? bytes : [] }
        let what = "the transfer from rank \(from) to rank \(to)"
        return try withComm(what) { comm in
            if rank == from {
                var length = Int64(bytes.count)
                try withUnsafeMutableBytes(of: &length) { raw in
                    try pointToPoint(raw, type: gn_int64(), count: 1, send: true, peer: to, comm: comm, what, sleeping: false)
                }
                try bytes.withUnsafeBytes { raw in
                    try pointToPoint(UnsafeMutableRawBufferPointer(mutating: raw), type: gn_byte(), count: raw.count,
                                     send: true, peer: to, comm: comm, what, sleeping: false)
                }
                return bytes
            }
            var length: Int64 = 0
            try withUnsafeMutableBytes(of: &length) { raw in
                // The receiver sleeps while it waits for the length (the sender may be reading
                // from disk); once the payload is on its way it spins.
                try pointToPoint(raw, type: gn_int64(), count: 1, send: false, peer: from, comm: comm, what, sleeping: true)
            }
            guard length >= 0, length <= Int64(Int32.max) * 64 else {
                throw CommunicatorError.transport(operation: "deliver", code: -1, message: "implausible message length \(length)")
            }
            var payload = [UInt8](repeating: 0, count: Int(length))
            try payload.withUnsafeMutableBytes { raw in
                try pointToPoint(raw, type: gn_byte(), count: raw.count, send: false, peer: from, comm: comm, what, sleeping: false)
            }
            return payload
        }
    }

    /// One message of `deliver` (tag 7101): `count` elements of `type` sent to or received from
    /// `peer`, in pieces of at most `maxCount` elements, each waited for within the step timeout.
    private func pointToPoint(_ raw: UnsafeMutableRawBufferPointer, type: MPI_Datatype?, count: Int, send: Bool, peer: Int,
                              comm: MPI_Comm?, _ what: String, sleeping: Bool) throws {
        guard let base = raw.baseAddress, count > 0 else { return }
        let elementBytes = raw.count / count
        try inPieces(count, what, sleeping: sleeping) { offset, n, request in
            let at = base + offset * elementBytes
            if send {
                try Self.check(MPI_Isend(at, n, type, Int32(peer), 7101, comm, &request), "MPI_Isend")
            } else {
                try Self.check(MPI_Irecv(at, n, type, Int32(peer), 7101, comm, &request), "MPI_Irecv")
            }
        }
    }

    /// Starts one non-blocking operation per piece of at most `maxCount` elements (MPI counts
    /// are Int32, so huge buffers go in pieces) and waits for each within the step timeout.
    private func inPieces(_ count: Int, _ what: String, sleeping: Bool,
                          _ start: (_ offset: Int, _ n: Int32, _ request: inout MPI_Request?) throws -> Void) throws {
        var offset = 0
        while offset < count {
            let n = min(count - offset, Self.maxCount)
            var request: MPI_Request? = gn_request_null()
            try start(offset, Int32(n), &request)
            try waitBounded(&request, what, sleeping: sleeping)
            offset += n
        }
    }

    public func barrier() throws {
        try withComm("barrier") { comm in
            var request: MPI_Request? = gn_request_null()
            try Self.check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier")
            try waitBounded(&request, "barrier", sleeping: true)
        }
    }

    // MARK: plumbing

    /// MPI counts are `int`; larger messages are split into pieces of this many elements.
    static let maxCount = 1 << 30

    private func withComm<T>(_ operation: String, _ body: (MPI_Comm?) throws -> T) throws -> T {
        try lock.withLock {
            if let brokenMessage { throw CommunicatorError.unresponsive(brokenMessage) }
            guard !finalized, let comm else {
                throw CommunicatorError.transport(operation: operation, code: -1, message: "MPI already finalized")
            }
            return try body(comm)
        }
    }

    /// Polls `request` to completion (lock held). Without `sleeping` it spins on `MPI_Test`
    /// as a blocking call would (with `mpi_yield_when_idle` MPI yields the core inside it);
    /// with `sleeping` it spins `idleSpinSeconds`, then sleeps doubling from 50 us up to
    /// `idleMaxSleepMicroseconds`. A wait that lasts longer than `housekeepingSeconds` also
    /// answers peers' liveness probes and checks that the ranks on this host still exist;
    /// one that lasts `stepTimeout` probes every other rank (`checkPeers`): if all answer
    /// (slow, not stuck: a long load, a long step, an idle coordinator) the wait goes on for
    /// another `stepTimeout`; if one does not, the communicator breaks and this throws
    /// `CommunicatorError.unresponsive` naming it. Waits shorter than `housekeepingSeconds`
    /// (every decode collective) cost one clock read per poll and nothing else.
    private func waitBounded(_ request: inout MPI_Request?, _ what: @autoclosure () -> String, sleeping: Bool) throws {
        var flag: Int32 = 0
        let start = MPI_Wtime()
        let spinUntil = start + Self.idleSpinSeconds
        var deadline = timeout > 0 ? start + timeout : Double.infinity
        var housekeeping = start + Self.housekeepingSeconds
        var sleep: UInt32 = 50
        while true {
            try Self.check(MPI_Test(&request, &flag, gn_status_ignore()), "MPI_Test")
            let now = MPI_Wtime()
            if flag != 0 {
                lastActivity = now
                return
            }
            if now >= housekeeping {
                answerProbes()
                if let dead = exitedPeer() {
                    throw breakWith("rank \(dead.rank) (pid \(dead.pid) on this host) has exited; rank \(rank) was waiting "
                                    + "\(Self.seconds(now - start)) in \(what()) during \(Activity.describe())")
                }
                housekeeping = now + Self.housekeepingSeconds
            }
            if now >= deadline {
                try checkPeers(situation: "after rank \(rank) waited \(Self.seconds(now - start)) (--step-timeout) in \(what())")
                deadline = MPI_Wtime() + timeout
            }
            if sleeping && now > spinUntil {
                usleep(sleep)
                sleep = min(sleep * 2, Self.idleMaxSleepMicroseconds)
            }
        }
    }

    static func seconds(_ s: Double) -> String { String(format: "%.1f s", s) }

    /// Marks the communicator broken (every later call throws the same) and returns the error.
    private func breakWith(_ message: String) -> CommunicatorError {
        brokenMessage = message
        return CommunicatorError.unresponsive(message)
    }

    /// How long a peer has to answer a liveness probe: a third of the timeout, within
    /// 0.5...2 s. A live rank answers within `answerIntervalSeconds` plus scheduling delay
    /// (its answering thread runs whenever its engine thread is outside MPI, and the engine
    /// thread answers itself while it waits in MPI).
    public var probeWindow: Double { max(0.5, min(2.0, timeout / 3)) }

    /// Probes every other rank on the side communicator (lock held) and waits `probeWindow`
    /// for the answers, answering probes of others meanwhile. Returns if all answered;
    /// otherwise breaks the communicator and throws, naming the silent ranks and, for the
    /// others, what they were doing.
    private func checkPeers(situation: String) throws {
        guard let probeComm else { return }
        let others = (0..<size).filter { $0 != rank }
        let replyBytes = Self.replyBytes
        // Not freed if a peer stays silent: its receive is still posted and may complete later.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: replyBytes * others.count, alignment: 8)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: replyBytes * others.count)
        var requests = [MPI_Request?](repeating: gn_request_null(), count: others.count)
        var answered = [Bool](repeating: false, count: others.count)
        var unreachable = [Bool](repeating: false, count: others.count)
        var nonce = Int64(rank)
        for (i, peer) in others.enumerated() {
            do {
                try Self.check(MPI_Irecv(buffer + i * replyBytes, Int32(replyBytes), gn_byte(), Int32(peer), Self.replyTag,
                                         probeComm, &requests[i]), "MPI_Irecv(probe reply)")
                // 8 bytes: eager on every transport, so this returns even if the peer is stopped.
                try Self.check(MPI_Send(&nonce, 1, gn_int64(), Int32(peer), Self.probeTag, probeComm), "MPI_Send(probe)")
            } catch {
                unreachable[i] = true
            }
        }
        let end = MPI_Wtime() + probeWindow
        while MPI_Wtime() < end {
            var pending = false
            for i in others.indices where !answered[i] && !unreachable[i] {
                var flag: Int32 = 0
                if MPI_Test(&requests[i], &flag, gn_status_ignore()) != MPI_SUCCESS {
                    unreachable[i] = true
                } else if flag != 0 {
                    answered[i] = true
                } else {
                    pending = true
                }
            }
            if !pending { break }
            answerProbes()
            usleep(1000)
        }
        let silent = others.indices.filter { !answered[$0] }.map { others[$0] }
        if silent.isEmpty {
            buffer.deallocate()
            return
        }
        let alive = others.indices.filter { answered[$0] }.map { i -> String in
            let raw = UnsafeRawBufferPointer(start: buffer + i * replyBytes, count: replyBytes)
            return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        let names = silent.map(String.init).joined(separator: ", ")
        var message = "rank\(silent.count == 1 ? "" : "s") \(names) stopped answering: no reply to a liveness probe within "
            + "\(Self.seconds(probeWindow)) \(situation) during \(Activity.describe())"
        if !alive.isEmpty { message += "; still answering: " + alive.joined(separator: "; ") }
        throw breakWith(message)
    }

    /// Answers every pending liveness probe (lock held): the reply says what this rank is
    /// doing. Errors are ignored: the prober judges by what arrives.
    private func answerProbes() {
        guard let probeComm else { return }
        while true {
            var flag: Int32 = 0
            var status = MPI_Status()
            guard MPI_Iprobe(gn_any_source(), Self.probeTag, probeComm, &flag, &status) == MPI_SUCCESS, flag != 0 else { return }
            let source = status.MPI_SOURCE
            var nonce: Int64 = 0
            guard MPI_Recv(&nonce, 1, gn_int64(), source, Self.probeTag, probeComm, gn_status_ignore()) == MPI_SUCCESS else { return }
            var reply = [UInt8](repeating: 0, count: Self.replyBytes)
            let text = Array("rank \(rank) (pid \(getpid()) on \(processorName)) is in \(Activity.describe())".utf8.prefix(Self.replyBytes - 1))
            reply.replaceSubrange(0..<text.count, with: text)
            _ = MPI_Send(&reply, Int32(reply.count), gn_byte(), source, Self.replyTag, probeComm)
        }
    }

    /// A rank on this host whose process no longer exists (or is a zombie), if any.
    private func exitedPeer() -> (rank: Int, pid: Int32)? {
        for peer in localPeers {
            if kill(peer.pid, 0) != 0 && errno == ESRCH { return peer }
            if let stat = try? String(contentsOfFile: "/proc/\(peer.pid)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")") {
                let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
                if state == "Z" || state == "X" { return peer }
            }
        }
        return nil
    }

    /// The answering thread: every `answerIntervalSeconds`, if the engine thread is not inside
    /// MPI (the lock is free), answers pending probes. So a rank that computes a long step or
    /// reads a large file still answers; only a frozen or dead process does not. When the
    /// engine thread has not waited in MPI for `stepTimeout` (an idle server's coordinator,
    /// a long load) this thread probes the other ranks itself; a failure breaks the
    /// communicator (the engine's next call throws it) and is passed to `onPeerFailure`.
    private func startAnswering() {
        lastActivity = MPI_Wtime()
        let thread = Thread { [self] in
            while true {
                usleep(UInt32(Self.answerIntervalSeconds * 1e6))
                guard lock.try() else { continue }
                if finalized {
                    lock.unlock()
                    return
                }
                answerProbes()
                var failure: String?
                var handler: (@Sendable (String) -> Void)?
                let now = MPI_Wtime()
                if timeout > 0, brokenMessage == nil, now - lastActivity >= timeout {
                    do {
                        try checkPeers(situation: "while rank \(rank) checked its peers after \(Self.seconds(now - lastActivity)) "
                                       + "without a collective (--step-timeout)")
                    } catch {
                        failure = brokenMessage
                        handler = peerFailureHandler
                    }
                    lastActivity = MPI_Wtime()
                }
                lock.unlock()
                if let failure, let handler { handler(failure) }
            }
        }
        thread.name = "gemma-node probe answerer"
        thread.start()
    }

    /// Tags on the probe communicator.
    static let probeTag: Int32 = 1
    static let replyTag: Int32 = 2
    /// A probe reply: UTF-8 text, zero-padded.
    static let replyBytes = 256
    /// See `waitBounded`.
    static let housekeepingSeconds = 0.05
    static let answerIntervalSeconds = 0.02

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

/// The request of a started non-blocking collective, shared by its `PendingCollective`.
private final class PendingRequest {
    var request: MPI_Request? = gn_request_null()
}
