// Runs the Hummingbird application on Swift concurrency's threads while rank 0's main thread
// runs the engine loop (MPI stays on that one thread), and stops it on request.
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// A started HTTP server. `waitUntilListening` reports the bound port or the bind failure.
public final class BackgroundServer: @unchecked Sendable {
    private let group: ServiceGroup
    private let finished = DispatchSemaphore(value: 0)
    private let started = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var port: Int?
    private var failure: String?

    /// Starts `app` (built with `onRunning` wired to `listening(port:)`, see `start`).
    private init(group: ServiceGroup) { self.group = group }

    /// Builds the application for `service` and starts it.
    public static func start(service: OpenAIService, host: String, port: Int) -> BackgroundServer {
        let box = PortBox()
        let app = HTTPServer.application(service: service, host: host, port: port) { bound in box.server?.listening(port: bound) }
        var logger = Logger(label: "gemma-node.lifecycle")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let server = BackgroundServer(group: group)
        box.server = server
        Task.detached {
            do {
                try await group.run()
            } catch {
                server.failed("\(error)")
            }
            server.failed("the HTTP server stopped")  // no-op when it had started
            server.finished.signal()
        }
        return server
    }

    private func listening(port: Int) {
        lock.lock()
        self.port = port
        lock.unlock()
        started.signal()
    }

    private func failed(_ message: String) {
        lock.lock()
        let first = port == nil && failure == nil
        if first { failure = message }
        lock.unlock()
        if first { started.signal() }
    }

    /// Waits until the server listens (returns its port) or failed to start (throws).
    public func waitUntilListening(timeout: Double = 30) throws -> Int {
        if started.wait(timeout: .now() + timeout) == .timedOut {
            throw APIError.internalError("the HTTP server did not start within \(Int(timeout)) s")
        }
        lock.lock()
        defer { lock.unlock() }
        if let port { return port }
        throw APIError.internalError("cannot start the HTTP server: \(failure ?? "unknown error")")
    }

    /// Graceful stop: open responses may finish; waits at most `timeout` seconds.
    @discardableResult
    public func stop(timeout: Double = 5) -> Bool {
        let group = self.group
        Task.detached { await group.triggerGracefulShutdown() }
        return finished.wait(timeout: .now() + timeout) == .success
    }
}

private final class PortBox: @unchecked Sendable {
    var server: BackgroundServer?
}
