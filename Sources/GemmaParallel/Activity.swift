// What this process is doing right now (loading, waiting for a plan, computing layer L of
// step S, sampling, ...), kept so that a rank whose peer stopped answering can say during
// what it happened, and so a live rank can answer a peer's liveness probe with the same
// words (MPICommunicator's stuck-rank detection). Written by the engine thread at every phase
// change (twice per layer per step), read by the communicator and its probe-answering thread.
import Foundation

/// The phase of the engine on this rank.
public enum ActivityKind: UInt8, Sendable {
    case starting, loading, handshake, planWait, plan, forward, layer, agreement, sampling, idle, shutdown, finished
}

/// Process-wide activity record. One engine per process under MPI; in-process multi-rank
/// tests (threads) share it, where it is informational only (nothing reads it there).
public enum Activity {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var kind: ActivityKind = .starting
    nonisolated(unsafe) private static var step: Int64 = -1
    nonisolated(unsafe) private static var layer: Int = -1

    /// Enters `kind` (the layer is cleared).
    public static func set(_ newKind: ActivityKind) {
        lock.lock()
        kind = newKind
        layer = -1
        lock.unlock()
    }

    /// Enters step `id` (a plan was received or sent).
    public static func setStep(_ id: UInt64) {
        lock.lock()
        step = Int64(truncatingIfNeeded: id)
        kind = .plan
        layer = -1
        lock.unlock()
    }

    /// Enters transformer layer `index` of the current step's forward pass.
    public static func setLayer(_ index: Int) {
        lock.lock()
        kind = .layer
        layer = index
        lock.unlock()
    }

    /// A short description, e.g. "layer 7 of step 41" or "waiting for the plan after step 40".
    public static func describe() -> String {
        lock.lock()
        let (k, s, l) = (kind, step, layer)
        lock.unlock()
        let after = s >= 0 ? " after step \(s)" : ""
        switch k {
        case .starting: return "start-up"
        case .loading: return "loading the model"
        case .handshake: return "the start-up handshake"
        case .planWait: return "waiting for the step plan" + after
        case .plan: return "checking the plan of step \(s)"
        case .forward: return "the forward pass of step \(s) (embedding)"
        case .layer: return "layer \(l) of step \(s)"
        case .agreement: return "the agreement after step \(s)"
        case .sampling: return "the sampling exchange of step \(s)"
        case .idle: return "idle (no requests)" + after
        case .shutdown: return "the shutdown plan"
        case .finished: return "finishing"
        }
    }
}
