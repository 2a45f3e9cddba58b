// Option groups shared by the subcommands, spelled like llama.cpp's flags where they overlap
// (-m, -p, -n, -t, -c, --temp, --top-k, --top-p, --min-p, --seed), so users can switch tools
// without relearning. Validation of values that need the model (context length) is left to
// the commands.
import ArgumentParser
import Foundation
import GemmaKernels
import GemmaModel
import GemmaParallel
import GemmaWire

/// A modelled network link for scaling experiments on one machine (EmulatedLinkCommunicator).
struct LinkOptions: ParsableArguments {
    @Option(name: .customLong("emulate-link"),
            help: "Emulate a network link LATENCY_US,GBIT (e.g. 200,1): every collective also waits the time that link would take. An emulation for scaling experiments, not a real network.")
    var emulateLink: String?

    /// The parsed link, nil when not asked for.
    func link() throws -> EmulatedLink? {
        guard let emulateLink else { return nil }
        do { return try EmulatedLink(parsing: emulateLink) } catch { throw ValidationError("--emulate-link: \(error)") }
    }

    func validate() throws { _ = try link() }
}

/// `--sync-type f32|bf16|q8_0`: the element type of the model's sum all-reduces on the wire
/// (SyncPayloadCommunicator). Every rank must be given the same; a mismatch is reported by
/// every rank at the first all-reduce.
struct SyncOptions: ParsableArguments {
    @Option(name: .customLong("sync-type"),
            help: "Payload of the model's all-reduces between ranks: f32 (exact, default), bf16 (half the bytes, relative error 2^-8) or q8_0 (blocks of 32 int8 + one f32 scale, 0.28x the bytes). Sampling and control messages stay exact. Same on every rank.")
    var syncType: String = "f32"

    /// The parsed payload type.
    func payload() throws -> SyncPayload {
        guard let p = SyncPayload(parsing: syncType) else { throw ValidationError("--sync-type must be f32, bf16 or q8_0, got \(syncType)") }
        return p
    }

    func validate() throws { _ = try payload() }
}

/// `--step-timeout SECONDS`: how long any wait for other ranks (a collective, a step plan, a
/// load-time transfer) may last before this rank probes the others for liveness
/// (MPICommunicator). A rank that answers is slow, not stuck, and is waited for again; one
/// that does not answer within the probe window (a third of the timeout, 0.5-2 s) is named
/// and the job ends non-zero. So the bound is not a limit on step or load time: a 27B step
/// of seconds or a load of minutes passes as long as every rank still answers. 10 s is long
/// compared to a decode step (ms) and to the scheduling hiccups of a loaded host, short
/// compared to how long a user or a load balancer waits for a frozen server.
struct TimeoutOptions: ParsableArguments {
    static let defaultSeconds = 10.0

    @Option(name: .customLong("step-timeout"),
            help: "Seconds any wait for other ranks (collective, step plan, load transfer) may last before the other ranks are probed; a rank that does not answer within a third of it (0.5-2 s) is named and the job exits non-zero. Slow but live ranks are waited for. 0 = wait forever.")
    var stepTimeout: Double = TimeoutOptions.defaultSeconds

    func validate() throws {
        guard stepTimeout.isFinite, stepTimeout >= 0 else {
            throw ValidationError("--step-timeout must be 0 (off) or a positive number of seconds, got \(stepTimeout)")
        }
    }
}

/// `--split W0,W1,...`: one positive share per rank, in rank order.
enum SplitOption {
    static let help: ArgumentHelp = "Uneven split: one share per rank, e.g. 2,1,1 (rank 0 gets half of the heads, MLP columns, vocabulary and KV cache). Any rank count; default: even."

    /// The shares, nil when not given; an error naming the flag for anything else.
    static func parse(_ text: String?) throws -> [Double]? {
        guard let text else { return nil }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        let shares = parts.map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !shares.isEmpty, shares.allSatisfy({ $0 != nil && $0!.isFinite && $0! > 0 }) else {
            throw ValidationError("--split must be positive numbers separated by commas, one per rank (e.g. 2,1,1), got \(text)")
        }
        return shares.map { $0! }
    }
}

/// `--weights-from-root`: only rank 0 needs the model file.
enum WeightsFromRoot {
    static let help: ArgumentHelp = "Only rank 0 reads the model: it sends every other rank its slices over MPI at load, so the other hosts need no copy of the file (-m is ignored on them)."
}

/// `--kv-type f32|f16|q8_0`: how the KV cache stores keys and values.
enum KVTypeOption {
    static let help: ArgumentHelp = "KV cache type: f32, f16 (default, as llama.cpp; f32 with --activations f32) or q8_0 (blocks of 32 int8 with an f16 scale; head dims must be multiples of 32). Every rank must use the same."

    static func parse(_ text: String) throws -> KVCacheType {
        guard let type = KVCacheType(rawValue: text.lowercased()) else {
            throw ValidationError("--kv-type must be f32, f16 or q8_0, got \(text)")
        }
        return type
    }
}

/// `--activations q8|f32`: how the matrix products see their input. q8 (default) rounds the
/// activations to int8 blocks for the integer SIMD dot products, as llama.cpp does; f32 is the
/// exact mode: weights dequantized to f32 rows and dotted with unrounded activations by the F32
/// SIMD kernel (`matmulF32Activations`), with the KV cache in f32 unless --kv-type says
/// otherwise. docs/FIDELITY.md measures both against f32 truth.
enum ActivationsOption {
    static let help: ArgumentHelp = "Activations of the matrix products: q8 (default: int8 blocks, fast, as llama.cpp) or f32 (exact mode: no activation rounding and an f32 KV cache unless --kv-type is given; several times slower, see docs/FIDELITY.md). Every rank must use the same."

    /// True for f32.
    static func parse(_ text: String) throws -> Bool {
        switch text.lowercased() {
        case "q8", "q8_0": return false
        case "f32": return true
        default: throw ValidationError("--activations must be q8 or f32, got \(text)")
        }
    }

    /// Puts f32 activations in force for every later matrix product (process-wide).
    static func apply(_ text: String) {
        if (try? parse(text)) == true { Kernels.exactActivations = true }
    }
}

/// `--overlap on|off`: prefill batches of at least 32 rows run each dense layer as two halves,
/// so one half's all-reduces travel while the other half computes (GemmaShard's overlapped
/// layer). Same results; docs/SCALING.md measures when it pays.
enum OverlapOption {
    static let defaultValue = "off"
    static let help: ArgumentHelp = "Overlap prefill all-reduces with computation: on runs each dense layer of a batch of 32+ tokens as two halves, one half's merge travelling while the other computes (pays where a transport moves data without the ranks' cores: RDMA, or hosts with spare cores running Open MPI's TCP progress thread; see docs/SCALING.md). Default off."

    static func parse(_ text: String) throws -> Bool {
        switch text.lowercased() {
        case "on": return true
        case "off": return false
        default: throw ValidationError("--overlap must be on or off, got \(text)")
        }
    }
}

/// How the model is placed on the ranks and stored: the load flags that every command that
/// loads a model shares, `bench` included (whose -c, -p and -n follow llama-bench instead).
struct PlacementOptions: ParsableArguments {
    @Option(name: .customLong("split"), help: SplitOption.help)
    var split: String?

    @Flag(name: .customLong("weights-from-root"), help: WeightsFromRoot.help)
    var weightsFromRoot = false

    @Option(name: .customLong("kv-type"), help: KVTypeOption.help)
    var kvType: String?

    @Option(name: .customLong("activations"), help: ActivationsOption.help)
    var activations: String = "q8"

    @Option(name: .customLong("overlap"), help: OverlapOption.help)
    var overlap: String = OverlapOption.defaultValue

    /// The `--kv-type` in force: as given, else f32 with `--activations f32` (the exact mode
    /// keeps keys and values unrounded too), else f16.
    var resolvedKVType: KVCacheType {
        if let kvType, let type = try? KVTypeOption.parse(kvType) { return type }
        return activations.lowercased() == "f32" ? .f32 : .f16
    }

    /// Load options with these flags; `maxContext`, `threads`, `quantize`, `slots` and
    /// `maxBatchTokens` are the command's. Also puts `--activations` in force (a process-wide
    /// kernel choice, `ActivationsOption.apply`).
    func loadOptions(maxContext: Int, threads: Int, quantize: WeightType? = nil, slots: Int = 1,
                     maxBatchTokens: Int = 512) -> GemmaLoadOptions {
        ActivationsOption.apply(activations)
        return GemmaLoadOptions(maxContext: maxContext, slots: slots, maxBatchTokens: maxBatchTokens, threads: threads,
                                quantize: quantize, split: (try? SplitOption.parse(split)) ?? nil, kvType: resolvedKVType,
                                weightsFromRoot: weightsFromRoot, overlap: (try? OverlapOption.parse(overlap)) ?? false)
    }

    func validate() throws {
        _ = try SplitOption.parse(split)
        if let kvType { _ = try KVTypeOption.parse(kvType) }
        _ = try ActivationsOption.parse(activations)
        _ = try OverlapOption.parse(overlap)
    }
}

/// `-m` and `-t`: which model and how many compute threads per rank (every command that runs one).
struct ModelFileOptions: ParsableArguments {
    @Option(name: [.short, .customLong("model")],
            help: "Model file (.gguf) or Hugging Face model directory. Default: $GEMMA_NODE_MODEL, else the cached Gemma 3 270M Q4_K_M.")
    var model: String?

    @Option(name: [.short, .customLong("threads")], help: "Compute threads per rank. Default: the cores this rank may run on, divided by the ranks on this host.")
    var threads: Int?

    /// The model path to load: `-m` if given, else the default model (see `DefaultModel`).
    var resolvedModelPath: String { model ?? DefaultModel.path().path }

    /// Threads per rank: `-t` if given, else the host's cores divided by the ranks on it.
    var resolvedThreads: Int { threads ?? HostInfo.defaultThreads }

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("-t/--threads must be at least 1, got \(threads)") }
    }
}

/// Which model to load, how much compute each rank may use, and the context and load flags.
struct ModelOptions: ParsableArguments {
    @OptionGroup var file: ModelFileOptions

    @Option(name: [.short, .customLong("ctx-size")], help: "Context size in tokens (0 = the model's own maximum).")
    var ctxSize: Int = 4096

    @Option(name: .customLong("quant"),
            help: "Re-encode a safetensors model's matrices on load: q8_0, q4_0, f16, bf16 or f32 (GGUF files are already encoded).")
    var quant: String?

    @OptionGroup var placement: PlacementOptions

    /// The `--quant` type, nil when not given.
    var quantizeType: WeightType? {
        guard let quant else { return nil }
        return WeightType.allCases.first { $0.description.lowercased() == quant.lowercased() }
    }

    var resolvedModelPath: String { file.resolvedModelPath }
    var resolvedKVType: KVCacheType { placement.resolvedKVType }

    /// The load options of these flags: the one place every command gets them from, so
    /// -c, -t and --quant mean the same everywhere. `slots` and `maxBatchTokens` are the
    /// command's own (serve's --parallel and --batch-tokens).
    func loadOptions(slots: Int = 1, maxBatchTokens: Int = 512) -> GemmaLoadOptions {
        placement.loadOptions(maxContext: ctxSize, threads: file.resolvedThreads, quantize: quantizeType, slots: slots,
                              maxBatchTokens: maxBatchTokens)
    }

    func validate() throws {
        if ctxSize < 0 { throw ValidationError("-c/--ctx-size must be 0 or positive, got \(ctxSize)") }
        if let quant, quantizeType.map({ [.q8_0, .q4_0, .f16, .bf16, .f32].contains($0) }) != true {
            throw ValidationError("--quant must be q8_0, q4_0, f16, bf16 or f32, got \(quant)")
        }
    }
}

/// The prompt and how many tokens to produce.
struct PromptOptions: ParsableArguments {
    @Option(name: [.short, .customLong("prompt")], help: "Prompt text.")
    var prompt: String?

    @Option(name: [.short, .customLong("n-predict")], help: "Tokens to generate (-1 = until end of sequence or full context).")
    var nPredict: Int = -1

    func validate() throws {
        if nPredict < -1 { throw ValidationError("-n/--n-predict must be -1 or more, got \(nPredict)") }
    }
}

/// Sampling parameters. Defaults are Gemma's generation config (top-k 64, top-p 0.95, T 1).
struct SamplingOptions: ParsableArguments {
    @Option(name: .customLong("temp"), help: "Temperature (0 = greedy).")
    var temperature: Float = 1.0

    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens (0 = all).")
    var topK: Int = 64

    @Option(name: .customLong("top-p"), help: "Nucleus sampling: keep the smallest set with this much probability (1 = off).")
    var topP: Float = 0.95

    @Option(name: .customLong("min-p"), help: "Drop tokens less likely than min-p times the most likely (0 = off).")
    var minP: Float = 0.0

    @Option(name: .customLong("seed"), help: "Random seed (default: random). The same seed gives the same tokens at any rank count.")
    var seed: UInt64?

    /// The flags as sampling parameters with `seed`.
    func params(seed: UInt64) -> SamplingParams {
        SamplingParams(temperature: temperature, topK: Int32(clamping: topK), topP: topP, minP: minP, seed: seed)
    }

    /// The engine's rule set (`SamplingParams.validate`), reported with the flag's name.
    func validate() throws {
        do {
            try params(seed: 0).validate()
        } catch let e as PlanError {
            let flag = ["temperature": "--temp", "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p"][e.field ?? ""] ?? "sampling"
            throw ValidationError("\(flag): \(e.detail)")
        }
    }
}
