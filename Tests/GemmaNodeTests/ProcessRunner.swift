// Runs the real built gemma-node binary, alone or under the real mpirun, with a timeout so a
// hang fails the test instead of hanging CI.
import Foundation

struct ProcessOutput {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool
    var all: String { stdout + stderr }
}

enum GemmaNodeBinary {
    /// `swift test` builds the executable next to the test bundle; on Linux
    /// `Bundle.main.bundleURL` is that build folder.
    static var url: URL { Bundle.main.bundleURL.appendingPathComponent("gemma-node") }

    /// Environment for mpirun: root allowed (CI containers run as root), and no inherited
    /// model override unless a test sets one.
    static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        env.removeValue(forKey: "GEMMA_NODE_TRANSPORT")
        env.removeValue(forKey: "GEMMA_NODE_PROTOCOL_VERSION_OVERRIDE")
        for (key, value) in extra { env[key] = value }
        return env
    }

    /// `gemma-node <arguments>` without mpirun.
    static func run(_ arguments: [String], environment extra: [String: String] = [:],
                    timeout: TimeInterval = 60) throws -> ProcessOutput {
        try launch(url, arguments, environment: environment(extra), timeout: timeout)
    }

    /// `mpirun --oversubscribe --bind-to none -n <ranks> gemma-node <arguments>`.
    static func mpirun(ranks: Int, _ arguments: [String], environment extra: [String: String] = [:],
                       timeout: TimeInterval = 60) throws -> ProcessOutput {
        let mpirun = URL(fileURLWithPath: "/usr/bin/env")
        // -x exports the test's variables to every rank explicitly (as on a real cluster).
        let exports = extra.keys.sorted().flatMap { ["-x", $0] }
        let args = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", String(ranks)] + exports + [url.path] + arguments
        return try launch(mpirun, args, environment: environment(extra), timeout: timeout)
    }

    /// MPMD: `mpirun -n 1 gemma-node <apps[0]> : -n 1 gemma-node <apps[1]> : ...`, one rank
    /// per argument list, so ranks can be given different arguments (e.g. different paths).
    static func mpirun(perRank apps: [[String]], timeout: TimeInterval = 60) throws -> ProcessOutput {
        let mpirun = URL(fileURLWithPath: "/usr/bin/env")
        var args = ["mpirun", "--oversubscribe", "--bind-to", "none"]
        for (i, app) in apps.enumerated() {
            if i > 0 { args.append(":") }
            args += ["-n", "1", url.path] + app
        }
        return try launch(mpirun, args, environment: environment(), timeout: timeout)
    }

    /// Starts `executable` with its stdout and stderr on pipes and no stdin.
    static func start(_ executable: URL, _ arguments: [String],
                      environment: [String: String]) throws -> (process: Process, stdout: Pipe, stderr: Pipe) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return (process, out, err)
    }

    static func launch(_ executable: URL, _ arguments: [String], environment: [String: String],
                       timeout: TimeInterval) throws -> ProcessOutput {
        let (process, out, err) = try start(executable, arguments, environment: environment)
        let timedOut = Flag()
        let killer = DispatchWorkItem {
            timedOut.set()
            process.terminate()  // mpirun forwards SIGTERM to its ranks
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)

        // Drain both pipes before waiting, or a full pipe deadlocks the child.
        let errData = DataBox()
        let errDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            errData.data = err.fileHandleForReading.readDataToEndOfFile()
            errDone.signal()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        errDone.wait()
        process.waitUntilExit()
        killer.cancel()
        return ProcessOutput(status: process.terminationStatus,
                             stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData.data, as: UTF8.self),
                             timedOut: timedOut.isSet)
    }
}

private final class DataBox: @unchecked Sendable {
    var data = Data()  // written by one reader thread, read after its semaphore signals
}

private final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

extension String {
    /// Number of non-overlapping occurrences of `needle`.
    func occurrences(of needle: String) -> Int {
        components(separatedBy: needle).count - 1
    }
}
