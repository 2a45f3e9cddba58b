// The parsers that read bytes from a file, a user or the network, each wrapped as one fuzz
// target: bytes in, every error thrown and caught, nothing else allowed (a trap, an
// out-of-bounds access or a hang is the bug). `Scripts/fuzz.sh` drives them with libFuzzer
// (the `gemma-fuzz` executable, built with -sanitize=fuzzer,address); the corpus replay test
// (Tests/GemmaFuzzTests) runs every committed seed and every past crash through the same
// functions in each ordinary test run, so a fixed crash stays fixed.
import Foundation
import GemmaEngine
import GemmaFormats
import GemmaModel
import GemmaParallel
import GemmaServer
import GemmaTokenizer
import GemmaWire

/// One parser under test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// GGUF header, metadata and tensor table (in memory), then the model config and the
    /// tokenizer read from that metadata, and every tensor's byte range.
    case gguf
    /// A whole GGUF model file loaded as a one-rank model (shapes checked against the
    /// config), then one forward pass of two tokens if it loads.
    case ggufModel = "gguf-model"
    /// A safetensors file: length, JSON header, dtypes, shapes and offsets; then a slice of
    /// every tensor.
    case safetensors
    /// A Hugging Face tokenizer.json (BPE vocabulary, added tokens, merges), then encode and
    /// decode.
    case tokenizerJSON = "tokenizer-json"
    /// A SentencePiece tokenizer.model (protobuf, through protobuf-c), then encode and decode.
    case tokenizerModel = "tokenizer-model"
    /// One coordinator -> worker envelope (protobuf-c decode and validation); what decodes
    /// must survive encode -> decode unchanged.
    case wire
    /// An OpenAI request body: the first byte picks the endpoint (even: chat completions,
    /// odd: completions), the rest is the body, decoded, checked and tokenized as the server
    /// does before queueing it.
    case http
    /// A JSON Schema (generated from the bytes, or the bytes' own text up to a NUL when they
    /// start with `{`) compiled to the structured-output automaton, tagged tool-call wrapper
    /// included; then byte walks and token walks with the shard mask (1, 2 and 3 shards of a
    /// small vocabulary) checked against the automaton id by id (GrammarFuzz.swift).
    case grammar
}

/// What a harness needs besides the input: the default model for the `http` target (its
/// tokenizer, chat template and context length make the request checks real).
public struct FuzzResources: Sendable {
    public var defaultModel: String?
    /// Positions per sequence of the `http` target's model: small, so that context
    /// overflow is reachable by short inputs.
    public var httpContext: Int

    public init(defaultModel: String? = nil, httpContext: Int = 256) {
        self.defaultModel = defaultModel
        self.httpContext = httpContext
    }
}

/// The reason a harness cannot start (not an input problem).
public struct FuzzSetupError: Error, CustomStringConvertible {
    public var description: String
}

/// Runs inputs through one target. Not thread-safe; one per fuzzing process.
public final class FuzzHarness {
    public let target: FuzzTarget
    private let service: OpenAIService?
    private let scratchPath: String
    /// Text every loaded tokenizer encodes: plain words, spaces, a control-token markup,
    /// bytes outside ASCII.
    static let probeText = "Hello  world <start_of_turn>user\nÀ 日本 🙂\t<eos>"

    public init(target: FuzzTarget, resources: FuzzResources = FuzzResources()) throws {
        self.target = target
        let dir = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        scratchPath = (dir as NSString).appendingPathComponent("gemma-fuzz-\(getpid()).gguf")
        if target == .http {
            guard let path = resources.defaultModel, FileManager.default.fileExists(atPath: path) else {
                throw FuzzSetupError(description: "the http target needs the default model (GEMMA_NODE_MODEL or Scripts/setup.sh)")
            }
            var options = GemmaLoadOptions()
            options.maxContext = resources.httpContext
            options.slots = 1
            let model = try GemmaShard.load(path: URL(fileURLWithPath: path), comm: SoloCommunicator(), options: options)
            let tokenizer = try GemmaTokenizer.load(path: path)
            let executor = StepExecutor(model: model, comm: SoloCommunicator())
            let scheduler = try BatchScheduler(executor: executor, maxQueued: 4)
            let service = OpenAIService(config: ServerConfig(modelName: "fuzz"))
            let arch = ModelSession.architecture(model)
            service.attach(Backend(scheduler: scheduler, tokenizer: tokenizer, template: ChatTemplate(architecture: arch),
                                   maxContext: model.maxContext,
                                   stopTokens: ModelSession.stopTokens(model, tokenizer: tokenizer, chat: true)))
            self.service = service
        } else {
            service = nil
        }
    }

    deinit { unlink(scratchPath) }

    /// Runs one input. Errors are the expected outcome for most inputs and are swallowed;
    /// returns whether the input was accepted (parsed, loaded, decoded) for corpus statistics.
    @discardableResult
    public func run(_ input: UnsafeRawBufferPointer) -> Bool {
        let bytes = [UInt8](input)
        switch target {
        case .gguf: return Self.gguf(bytes)
        case .ggufModel: return ggufModel(bytes)
        case .safetensors: return Self.safetensors(bytes)
        case .tokenizerJSON: return Self.tokenizerJSON(bytes)
        case .tokenizerModel: return Self.tokenizerModel(bytes)
        case .wire: return Self.wire(bytes)
        case .http: return http(bytes)
        case .grammar: return GrammarFuzz.run(bytes)
        }
    }

    public func run(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { run($0) } }

    static func gguf(_ bytes: [UInt8]) -> Bool {
        guard let g = try? GGUFFile(file: MappedFile(bytes: bytes, name: "fuzz.gguf")) else { return false }
        var sink = 0
        for key in g.metadataKeys { sink &+= g.value(key)?.description.utf8.count ?? 0 }
        for t in g.tensors {
            if let d = try? g.data(of: t) { sink &+= d.count > 0 ? Int(d[0]) &+ Int(d[d.count - 1]) : 0 }
            if t.rows > 0, let r = try? g.rowBytes(of: t, rows: (t.rows - 1)..<t.rows) { sink &+= r.count }
        }
        _ = try? GemmaConfig(gguf: g)
        if let tok = try? GemmaTokenizer(gguf: g) { sink &+= exercise(tok) }
        return sink != Int.min
    }

    func ggufModel(_ bytes: [UInt8]) -> Bool {
        guard FileManager.default.createFile(atPath: scratchPath, contents: Data(bytes)) else { return false }
        var options = GemmaLoadOptions()
        options.maxContext = 16
        options.slots = 1
        options.maxBatchTokens = 4
        options.threads = 1
        guard let model = try? GemmaShard.load(path: URL(fileURLWithPath: scratchPath), comm: SoloCommunicator(), options: options) else {
            return false
        }
        let tokens: [Int32] = model.vocabSize >= 2 ? [1, Int32(model.vocabSize - 1)] : [0]
        _ = try? gatherFullLogits(model: model, comm: SoloCommunicator(), tokens: tokens, allPositions: false)
        return true
    }

    static func safetensors(_ bytes: [UInt8]) -> Bool {
        guard let archive = try? SafetensorsArchive(regions: [MappedFile(bytes: bytes, name: "fuzz.safetensors")]) else {
            return false
        }
        for (name, info) in archive.tensors {
            let rows = min(info.rows, 2), cols = min(info.cols, 3)
            var out = [UInt8](repeating: 0, count: rows * cols * info.dtype.byteSize)
            out.withUnsafeMutableBytes { buf in
                guard let base = buf.baseAddress else { return }
                try? archive.copySlice(name, rows: 0..<rows, cols: 0..<cols, into: base)
            }
            _ = try? archive.rawBytes(name)
        }
        return true
    }

    static func tokenizerJSON(_ bytes: [UInt8]) -> Bool {
        let config = Data(#"{"add_bos_token": true, "add_eos_token": false, "bos_token": "<bos>", "eos_token": "<eos>"}"#.utf8)
        guard let tok = try? GemmaTokenizer(tokenizerJSONData: Data(bytes), configData: config, source: "fuzz/tokenizer.json") else {
            return false
        }
        return exercise(tok) >= 0
    }

    static func tokenizerModel(_ bytes: [UInt8]) -> Bool {
        guard let tok = try? GemmaTokenizer(sentencePieceModelData: Data(bytes), source: "fuzz.model") else { return false }
        return exercise(tok) >= 0
    }

    /// Encodes the probe text (with and without special-token parsing) and decodes it back,
    /// plus a decode of the first and last ids.
    static func exercise(_ tok: GemmaTokenizer) -> Int {
        let a = tok.encode(probeText)
        let b = tok.encode(probeText, addSpecial: false, parseSpecial: false)
        let ends: [Int32] = tok.count > 0 ? [0, Int32(tok.count - 1)] : []
        let text = tok.decode(a) + tok.decode(b, renderSpecial: true) + tok.decode(ends)
        return a.count + b.count + text.utf8.count
    }

    static func wire(_ bytes: [UInt8]) -> Bool {
        guard let message = try? WireMessage.decode(bytes) else { return false }
        // What a rank accepted must encode and decode to itself (strings lose NULs on the
        // way, so compare after one round trip).
        let once: WireMessage
        do { once = try WireMessage.decode(message.encode()) } catch {
            preconditionFailure("a decoded message failed to decode after encoding: \(error)")
        }
        guard let twice = try? WireMessage.decode(once.encode()), twice == once else {
            preconditionFailure("encode/decode is not stable for \(once)")
        }
        return true
    }

    func http(_ bytes: [UInt8]) -> Bool {
        guard let service, let first = bytes.first else { return false }
        let endpoint: Endpoint = first % 2 == 0 ? .chat : .completion
        return (try? service.prepare(endpoint, body: Data(bytes.dropFirst()))) != nil
    }
}
