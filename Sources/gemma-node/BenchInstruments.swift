// Instruments for `gemma-node bench`: a model wrapper that cuts time into steps (with the
// engine's `TimedCommunicator` timing the collectives), peak RSS from /proc, and the weight
// bytes one decoded token reads (for the roofline figure).
import Foundation
import GemmaEngine
import GemmaFormats
import GemmaModel
import GemmaParallel

/// Monotonic nanoseconds.
@inline(__always) func benchNow() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Per-step time on one rank, split by where it went. A step runs from one `forward` call to
/// the next, so it covers the forward pass, the success agreement, the sampling exchange, the
/// wait for the next plan and (on rank 0) scheduling.
struct StepSplit: Sendable {
    var steps = 0
    /// Whole steps.
    var totalNanos: UInt64 = 0
    /// Inside `forward`, excluding its collectives: the compute.
    var computeNanos: UInt64 = 0
    /// Collectives inside `forward` (all-reduces of o_proj/down_proj, the embedding); includes
    /// waiting for the slowest rank to arrive.
    var forwardCollectiveNanos: UInt64 = 0
    /// Sum all-reduces inside the forwards, and their payload bytes per rank.
    var allReduceCalls: UInt64 = 0, allReduceBytes: UInt64 = 0
    /// Waiting for the next step plan (the idle broadcast): on workers, the coordinator's
    /// sampling and scheduling; on rank 0, the send.
    var planWaitNanos: UInt64 = 0
    /// The rest: agreement, sampling exchange, bookkeeping between steps.
    var otherNanos: UInt64 { totalNanos &- computeNanos &- forwardCollectiveNanos &- planWaitNanos }

    func milliseconds(_ nanos: UInt64) -> Double { steps > 0 ? Double(nanos) / Double(steps) / 1e6 : 0 }
}

/// Wraps the model to cut time into steps (see `StepSplit`): single-token forwards are decode
/// steps, larger ones prefill steps (a one-token prompt would count as decode; bench prompts
/// are longer).
final class TimingModel: ShardedCausalLM {
    let inner: any ShardedCausalLM
    let comm: TimedCommunicator
    private(set) var decode = StepSplit()
    private(set) var prefill = StepSplit()
    /// The open step: its kind, start, and the communicator's counters at its start.
    private var open: (decode: Bool, start: UInt64, forward: UInt64, inForward: UInt64, wait: UInt64, calls: UInt64, bytes: UInt64)?

    init(_ inner: any ShardedCausalLM, comm: TimedCommunicator) {
        self.inner = inner
        self.comm = comm
    }

    var vocabSize: Int { inner.vocabSize }
    var sampleableVocab: Int { inner.sampleableVocab }
    var vocabRange: Range<Int> { inner.vocabRange }
    var maxContext: Int { inner.maxContext }
    var slots: Int { inner.slots }
    var maxBatchTokens: Int { inner.maxBatchTokens }
    func release(slot: Int) { inner.release(slot: slot) }

    /// Closes the open step at `now` (the next forward's start, or the end of a session).
    func closeStep(at now: UInt64) {
        guard let o = open else { return }
        var s = o.decode ? decode : prefill
        s.steps += 1
        s.totalNanos += now - o.start
        let collectives = comm.allReduceSumNanos - o.inForward
        s.forwardCollectiveNanos += collectives
        s.computeNanos += o.forward - collectives
        s.planWaitNanos += comm.planWaitNanos - o.wait
        s.allReduceCalls += o.calls
        s.allReduceBytes += o.bytes
        if o.decode { decode = s } else { prefill = s }
        open = nil
    }

    /// Drops the open step without counting it (the step before a shutdown includes the
    /// shutdown's plan wait, which is not a decode cost).
    func discardOpenStep() { open = nil }

    /// Forgets everything measured so far (after warm-up).
    func reset() {
        decode = StepSplit()
        prefill = StepSplit()
        open = nil
    }

    func forward(_ batch: [BatchEntry]) throws -> LogitsSlice {
        let t0 = benchNow()
        closeStep(at: t0)
        let inForward = comm.allReduceSumNanos, wait = comm.planWaitNanos
        let calls = comm.allReduceSumCalls, bytes = comm.allReduceSumBytes
        let slice = try inner.forward(batch)
        open = (decode: batch.count == 1, start: t0, forward: benchNow() - t0, inForward: inForward, wait: wait,
                calls: comm.allReduceSumCalls - calls, bytes: comm.allReduceSumBytes - bytes)
        return slice
    }
}

/// Facts from /proc about this process and machine (Linux; nil elsewhere).
enum ProcessStats {
    /// Peak resident set (VmHWM) in bytes.
    static var peakResidentBytes: Int? { statusKilobytes("VmHWM:").map { $0 * 1024 } }
    /// Current resident set (VmRSS) in bytes.
    static var residentBytes: Int? { statusKilobytes("VmRSS:").map { $0 * 1024 } }
    /// Current anonymous resident memory (RssAnon: heap, weight copies, KV cache) in bytes.
    static var residentAnonymousBytes: Int? { statusKilobytes("RssAnon:").map { $0 * 1024 } }
    /// Current file-backed and shared resident memory (RssFile + RssShmem: library code,
    /// mapped model pages, MPI shared segments) in bytes.
    static var residentFileBytes: Int? {
        guard let file = statusKilobytes("RssFile:") else { return nil }
        return (file + (statusKilobytes("RssShmem:") ?? 0)) * 1024
    }

    static func statusKilobytes(_ key: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return nil }
        return Int(line.dropFirst(key.count).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
    }

    /// The 1-minute load average (how busy the shared machine was).
    static var loadAverage: Double? {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
        return text.split(separator: " ").first.flatMap { Double($0) }
    }

    /// "model name" of the first CPU in /proc/cpuinfo.
    static var cpuModel: String? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
              let colon = line.firstIndex(of: ":") else { return nil }
        return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
}

