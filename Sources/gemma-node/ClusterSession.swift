// How every rank joins the cluster and leaves it: picks the transport (MPI under mpirun, a
// world of one otherwise), runs a command's body on every rank, and turns failures into the
// same message and a non-zero exit on every rank, without leaving any rank hanging.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaMPI
import GemmaParallel

/// Facts about this process's machine, as one rank reports them.
enum HostInfo {
    /// Cores this process may run on. Honours CPU affinity (mpirun's binding, taskset), which
    /// Foundation's `activeProcessorCount` ignores on Linux: read from /proc/self/status.
    static var availableCores: Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }),
           let count = cpuListCount(String(line.dropFirst("Cpus_allowed_list:".count))) {
            return count
        }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Compute threads per rank when -t is not given: the cores this process may run on,
    /// shared among the ranks Open MPI started on this host (OMPI_COMM_WORLD_LOCAL_SIZE), so
    /// `mpirun -n 2` on a 2-core host runs 1 thread per rank, not 2 (4 busy threads on 2 cores).
    static var defaultThreads: Int {
        defaultThreads(cores: availableCores, onlineCores: max(1, ProcessInfo.processInfo.activeProcessorCount),
                       localRanks: localRanks)
    }

    /// Whether this host runs at least as many ranks as it has cores, the rule under which
    /// MPICommunicator turns on Open MPI's yield when idle: a waiting rank then gives its core
    /// away, and so does an emulated link's hold.
    static var noSpareCore: Bool {
        localRanks > 1 && localRanks >= ProcessInfo.processInfo.activeProcessorCount
    }

    /// Ranks Open MPI started on this host (OMPI_COMM_WORLD_LOCAL_SIZE; 1 outside mpirun).
    static var localRanks: Int {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? 1
    }

    /// The rule behind `defaultThreads`. When the affinity mask already holds fewer cores than
    /// the host has online, the launcher has divided them (mpirun --bind-to core, taskset):
    /// those are this rank's own. Otherwise every local rank sees all cores, and each takes its
    /// share, rounded down, at least 1.
    static func defaultThreads(cores: Int, onlineCores: Int, localRanks: Int) -> Int {
        let cores = max(1, cores)
        if cores < onlineCores || localRanks <= 1 { return cores }
        return max(1, cores / localRanks)
    }

    /// Number of CPUs in a Linux CPU list such as "0-3,6,8-9"; nil if it does not parse.
    static func cpuListCount(_ list: String) -> Int? {
        var total = 0
        for part in list.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",") {
            let bounds = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1:
                guard bounds[0] != nil else { return nil }
                total += 1
            case 2:
                guard let low = bounds[0], let high = bounds[1], high >= low else { return nil }
                total += high - low + 1
            default:
                return nil
            }
        }
        return total > 0 ? total : nil
    }
    static var hostName: String { ProcessInfo.processInfo.hostName }
}

/// Runs a command body on every rank of the cluster.
///
/// Failure rules (DESIGN: a failure on one rank must not hang the others):
/// - An error that all ranks already agree on (`CommunicatorError.remote`, from
///   `Communicator.agree`, or a `SameOnEveryRankError`) is printed identically by every rank, MPI is
///   finalised, and every rank exits with status 1.
/// - Any other error on a multi-rank world may have left other ranks waiting in a collective,
///   so the rank prints it and aborts the whole job (`MPI_Abort`), which mpirun turns into a
///   non-zero exit.
enum ClusterSession {
    /// Environment override for the transport: `mpi` forces MPI (singleton init without
    /// mpirun, used by tests), `solo` forces a world of one.
    static let transportVariable = "GEMMA_NODE_TRANSPORT"

    /// The MPI communicator of this process while `run` runs (nil in a world of one), for
    /// commands that want `onPeerFailure` (serve).
    nonisolated(unsafe) static var mpi: MPICommunicator?

    /// `link`: every collective also waits the time that link would take (`--emulate-link`).
    /// `sync`: the payload of the model's sum all-reduces (`--sync-type`); nil for commands
    /// without the flag. It wraps the emulated link, so the link holds each all-reduce for
    /// the bytes actually sent (the compact payload's all-gather).
    /// `stepTimeout`: bound of every wait for other ranks (`--step-timeout`, 0 = none). A
    /// rank found stuck or dead ends the job: every rank that can still run prints which
    /// rank stopped answering and during what, keeps answering the others' probes for one
    /// probe window (so they do not name it in turn) and aborts the job.
    static func run(link: EmulatedLink? = nil, sync: SyncPayload? = nil, stepTimeout: Double = TimeoutOptions.defaultSeconds,
                    _ body: (any Communicator) throws -> Void) throws {
        Activity.set(.loading)
        MPICommunicator.lineBufferStandardOutput()
        let choice = ProcessInfo.processInfo.environment[transportVariable] ?? "auto"
        let useMPI: Bool
        switch choice {
        case "mpi": useMPI = true
        case "solo": useMPI = false
        case "auto", "": useMPI = MPICommunicator.isLaunchedByMPI
        default:
            printError("\(transportVariable) must be auto, mpi or solo, got \"\(choice)\"")
            throw ExitCode.failure
        }
        var mpi: MPICommunicator?
        let comm: any Communicator
        if useMPI {
            do {
                let started = try MPICommunicator()
                started.setStepTimeout(stepTimeout)
                mpi = started
                Self.mpi = started
                comm = started
            } catch {
                printError("cannot start MPI: \(error)")
                throw ExitCode.failure
            }
        } else {
            comm = SoloCommunicator()
        }

        var failure: Error?
        let linked: any Communicator = link.map {
            EmulatedLinkCommunicator(comm, link: $0, yieldsWhileHolding: HostInfo.noSpareCore)
        } ?? comm
        let active: any Communicator = sync.map { SyncPayloadCommunicator(linked, payload: $0) } ?? linked
        do { try body(active) } catch { failure = error }

        if let failure {
            // A peer stopped answering or exited: nothing can be agreed any more.
            if let mpi, let message = mpi.failureMessage {
                mpi.abort(message, linger: mpi.probeWindow)
            }
            if let exit = failure as? ExitCode, exit.isSuccess {
                try? mpi?.finalize()
                throw exit
            }
            // Errors every rank raised identically: `agree`'s, and `SameOnEveryRankError`s
            // computed from data all ranks hold (the handshake's verdict).
            var agreed = failure is any SameOnEveryRankError
            if case CommunicatorError.remote = failure { agreed = true }
            if agreed || comm.size == 1 {
                if !(failure is ExitCode) { printError("\(failure)") }
                try? mpi?.finalize()
                throw ExitCode.failure
            }
            if let mpi { mpi.abort("\(failure)") }
            printError("\(failure)")
            throw ExitCode.failure
        }
        do {
            try mpi?.finalize()
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
    }

    /// Writes `gemma-node: error: <message>` to stderr.
    static func printError(_ message: String) {
        FileHandle.standardError.write(Data("gemma-node: error: \(message)\n".utf8))
    }
}
