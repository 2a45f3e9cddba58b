// The server's own Prometheus metrics: counters, gauges and histograms kept under one lock
// and rendered in the text exposition format for GET /metrics. No metrics library: the set
// is small and fixed.
import Foundation

/// A fixed-bucket histogram (cumulative counts are produced when rendering).
struct Histogram {
    let bounds: [Double]
    var counts: [Int]
    var sum = 0.0
    var count = 0

    init(_ bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    mutating func observe(_ x: Double) {
        sum += x
        count += 1
        if let i = bounds.firstIndex(where: { x <= $0 }) { counts[i] += 1 }
    }
}

/// All metrics of one server. Thread-safe.
public final class ServerMetrics: @unchecked Sendable {
    private let lock = NSLock()
    private var requests: [String: Int] = [:]  // "endpoint|status" -> count
    private var promptTokens = 0
    private var cachedPromptTokens = 0
    private var generatedTokens = 0
    private var steps = 0
    private var queueDepth = 0
    private var running = 0
    private var ttft = Histogram([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
    private var itl = Histogram([0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56])
    private var batchSequences = Histogram([1, 2, 4, 8, 16, 32, 64])
    private var batchTokens = Histogram([1, 4, 16, 64, 256, 1024, 4096])
    private var stepSeconds = Histogram([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
    private var computeSeconds = 0.0
    private var allReduceSeconds = 0.0
    private var controlSeconds = 0.0
    private var samplingSeconds = 0.0
    private var maskedRows = 0
    private var maskSeconds = 0.0

    /// Reads the live queue depth and running count at render time (set once the engine
    /// is attached); the values recorded by `step`/`load` are used until then.
    public var liveLoad: (@Sendable () -> (waiting: Int, running: Int))? {
        get { lock.lock(); defer { lock.unlock() }; return _liveLoad }
        set { lock.lock(); _liveLoad = newValue; lock.unlock() }
    }
    private var _liveLoad: (@Sendable () -> (waiting: Int, running: Int))?

    public init() {}

    private func locked(_ body: () -> Void) {
        lock.lock()
        body()
        lock.unlock()
    }

    public func request(endpoint: String, status: Int) { locked { requests["\(endpoint)|\(status)", default: 0] += 1 } }
    public func prompt(tokens: Int) { locked { promptTokens += tokens } }
    /// Prefix caching: prompt tokens whose KV entries were reused instead of computed.
    public func cachedPrompt(tokens: Int) {
        guard tokens > 0 else { return }
        locked { cachedPromptTokens += tokens }
    }
    public func generated(tokens: Int) { locked { generatedTokens += tokens } }
    public func timeToFirstToken(_ s: Double) { locked { ttft.observe(s) } }
    public func interTokenLatency(_ s: Double) { locked { itl.observe(s) } }

    /// One engine step: sizes and where its time went.
    public func step(sequences: Int, tokens: Int, forward: Double, allReduce: Double, control: Double, sampling: Double,
                     queued: Int, running: Int) {
        locked {
            steps += 1
            batchSequences.observe(Double(sequences))
            batchTokens.observe(Double(tokens))
            stepSeconds.observe(forward + control + sampling)
            computeSeconds += max(0, forward - allReduce)
            allReduceSeconds += allReduce
            controlSeconds += control
            samplingSeconds += sampling
            queueDepth = queued
            self.running = running
        }
    }

    /// Structured output: rows masked on rank 0's vocabulary shard and the time it took.
    public func masked(rows: Int, seconds: Double) {
        guard rows > 0 else { return }
        locked { maskedRows += rows; maskSeconds += seconds }
    }

    public func load(queued: Int, running: Int) { locked { queueDepth = queued; self.running = running } }

    /// The Prometheus text exposition.
    public func render() -> String {
        if let live = liveLoad?() { load(queued: live.waiting, running: live.running) }
        lock.lock()
        defer { lock.unlock() }
        var out = ""
        func head(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func value(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }
        func histogram(_ name: String, _ help: String, _ h: Histogram) {
            head(name, "histogram", help)
            var cumulative = 0
            for (b, c) in zip(h.bounds, h.counts) {
                cumulative += c
                out += "\(name)_bucket{le=\"\(value(b))\"} \(cumulative)\n"
            }
            out += "\(name)_bucket{le=\"+Inf\"} \(h.count)\n\(name)_sum \(h.sum)\n\(name)_count \(h.count)\n"
        }
        head("gemma_requests_total", "counter", "HTTP requests by endpoint and status code.")
        for key in requests.keys.sorted() {
            let parts = key.split(separator: "|", maxSplits: 1).map(String.init)
            out += "gemma_requests_total{endpoint=\"\(parts[0])\",status=\"\(parts.count > 1 ? parts[1] : "")\"} \(requests[key] ?? 0)\n"
        }
        head("gemma_prompt_tokens_total", "counter", "Prompt tokens admitted.")
        out += "gemma_prompt_tokens_total \(promptTokens)\n"
        head("gemma_prompt_tokens_cached_total", "counter", "Prompt tokens whose KV entries were reused from the prefix cache instead of computed.")
        out += "gemma_prompt_tokens_cached_total \(cachedPromptTokens)\n"
        head("gemma_generated_tokens_total", "counter", "Tokens generated.")
        out += "gemma_generated_tokens_total \(generatedTokens)\n"
        head("gemma_engine_steps_total", "counter", "Engine steps (one pass over the weights each).")
        out += "gemma_engine_steps_total \(steps)\n"
        head("gemma_queue_depth", "gauge", "Requests waiting for a KV slot.")
        out += "gemma_queue_depth \(queueDepth)\n"
        head("gemma_running_sequences", "gauge", "Sequences holding a KV slot.")
        out += "gemma_running_sequences \(running)\n"
        histogram("gemma_time_to_first_token_seconds", "From request arrival to the first generated token.", ttft)
        histogram("gemma_inter_token_latency_seconds", "Between consecutive tokens of one request.", itl)
        histogram("gemma_batch_sequences", "Sequences per engine step.", batchSequences)
        histogram("gemma_batch_tokens", "Tokens per engine step (decode tokens plus prompt chunks).", batchTokens)
        histogram("gemma_step_seconds", "Wall time of one engine step on rank 0.", stepSeconds)
        head("gemma_step_phase_seconds_total", "counter",
             "Engine step time on rank 0 by phase: compute (forward minus all-reduce), allreduce (the model's all-reduces, including waiting for the slowest rank), control (plan broadcast and agreement), sampling (distributed sampling exchange).")
        out += "gemma_step_phase_seconds_total{phase=\"compute\"} \(computeSeconds)\n"
        out += "gemma_step_phase_seconds_total{phase=\"allreduce\"} \(allReduceSeconds)\n"
        out += "gemma_step_phase_seconds_total{phase=\"control\"} \(controlSeconds)\n"
        out += "gemma_step_phase_seconds_total{phase=\"sampling\"} \(samplingSeconds)\n"
        head("gemma_constrained_rows_total", "counter", "Structured output: rows (one per constrained token) masked on rank 0's vocabulary shard.")
        out += "gemma_constrained_rows_total \(maskedRows)\n"
        head("gemma_constrained_mask_seconds_total", "counter", "Structured output: time rank 0 spent masking its vocabulary shard (part of the sampling phase).")
        out += "gemma_constrained_mask_seconds_total \(maskSeconds)\n"
        return out
    }
}
