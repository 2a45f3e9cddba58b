// Bytes <-> `WireMessage` through the protobuf-c code in CWire. Encoding builds the C structs in
// a scratch arena for the duration of one pack; decoding unpacks, copies into Swift values,
// frees with the generated free_unpacked, then validates. Nothing here can crash on input bytes:
// protobuf-c's NULL is classified (truncated vs garbage) and every pointer is checked.
import CWire

// MARK: - Public entry points

extension WireMessage {
    /// The envelope bytes of this message (protobuf, deterministic for equal values).
    /// Strings lose any NUL characters (protobuf-c stores them as C strings).
    public func encode() -> [UInt8] { encode(envelopeVersion: WireProtocol.version) }

    /// Encoding with another envelope version: only tests use it, to play a rank from
    /// another commit.
    func encode(envelopeVersion: UInt32) -> [UInt8] {
        let arena = CArena()
        let env = arena.make(GemmaNode__Envelope.self, gemma_node__envelope__init)
        env.pointee.protocol_version = envelopeVersion
        switch self {
        case .hello(let h):
            env.pointee.body_case = GEMMA_NODE__ENVELOPE__BODY_HELLO
            env.pointee.hello = h.cMessage(arena)
        case .plan(let p):
            env.pointee.body_case = GEMMA_NODE__ENVELOPE__BODY_PLAN
            env.pointee.plan = p.cMessage(arena)
        case .shutdown(let s):
            env.pointee.body_case = GEMMA_NODE__ENVELOPE__BODY_SHUTDOWN
            env.pointee.shutdown = s.cMessage(arena)
        }
        let size = gemma_node__envelope__get_packed_size(env)
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBufferPointer { buf -> Int in
            guard let base = buf.baseAddress else { return 0 }
            return gemma_node__envelope__pack(env, base)
        }
        // pack writes exactly get_packed_size bytes by contract; keep what it wrote.
        if written < out.count { out.removeLast(out.count - written) }
        withExtendedLifetime(arena) {}
        return out
    }

    /// Decodes and validates one envelope. Throws `WireError` on anything else: empty,
    /// truncated or garbage bytes, another protocol version (except for a Hello, which
    /// decodes across versions so `checkHello` can name the rank), unknown bodies, or
    /// out-of-range contents.
    public static func decode(_ bytes: [UInt8]) throws -> WireMessage {
        guard !bytes.isEmpty else { throw WireError.empty }
        let unpacked = bytes.withUnsafeBufferPointer { buf in
            gemma_node__envelope__unpack(nil, buf.count, buf.baseAddress)
        }
        guard let env = unpacked else {
            throw WireFraming.check(bytes) ?? WireError.garbage(byteCount: bytes.count, detail: "protobuf-c could not unpack it")
        }
        defer { gemma_node__envelope__free_unpacked(env, nil) }
        // A truncation that happens to end on a field boundary still unpacks; framing says so.
        let e = env.pointee
        let version = e.protocol_version
        let message: WireMessage
        switch e.body_case {
        case GEMMA_NODE__ENVELOPE__BODY_HELLO:
            guard let h = e.hello else { throw WireError.garbage(byteCount: bytes.count, detail: "Hello body is null") }
            message = .hello(try Hello(c: h.pointee))
        case GEMMA_NODE__ENVELOPE__BODY_PLAN:
            guard version == WireProtocol.version else { throw versionError(version, bytes.count) }
            guard let p = e.plan else { throw WireError.garbage(byteCount: bytes.count, detail: "StepPlan body is null") }
            message = .plan(try StepPlan(c: p.pointee))
        case GEMMA_NODE__ENVELOPE__BODY_SHUTDOWN:
            guard version == WireProtocol.version else { throw versionError(version, bytes.count) }
            guard let s = e.shutdown else { throw WireError.garbage(byteCount: bytes.count, detail: "Shutdown body is null") }
            message = .shutdown(try Shutdown(c: s.pointee))
        default:
            guard version == WireProtocol.version else { throw versionError(version, bytes.count) }
            let fields = unknownFieldNumbers(e.base)
            if fields.isEmpty {
                throw WireError.garbage(byteCount: bytes.count, detail: "envelope has no body")
            }
            throw WireError.unknownMessage(fieldNumbers: fields)
        }
        try message.validate()
        return message
    }

    /// A version of 0 means the field was absent: no real sender omits it.
    private static func versionError(_ version: UInt32, _ count: Int) -> WireError {
        version == 0 ? .garbage(byteCount: count, detail: "no protocol version")
                     : .versionMismatch(remote: version, local: WireProtocol.version)
    }

    private static func unknownFieldNumbers(_ base: ProtobufCMessage) -> [UInt32] {
        guard let fields = base.unknown_fields else { return [] }
        return (0..<Int(base.n_unknown_fields)).map { fields[$0].tag }
    }
}

/// A message that travels as the body of its own envelope: `Hello`, `StepPlan`, `Shutdown`.
public protocol WireBody: Sendable {
    /// This message as an envelope body.
    var wireMessage: WireMessage { get }
    /// The message of this type an envelope carries, nil for another kind.
    static func body(of message: WireMessage) -> Self?
    /// Name used in error messages.
    static var kind: String { get }
}

extension WireBody {
    /// `wireMessage.encode()`: the envelope bytes of this message.
    public func encode() -> [UInt8] { wireMessage.encode() }

    /// Decodes bytes that must hold a message of this type.
    public static func decode(_ bytes: [UInt8]) throws -> Self {
        let m = try WireMessage.decode(bytes)
        guard let body = body(of: m) else { throw WireError.unexpectedMessage(expected: kind, got: m.kind) }
        return body
    }
}

extension Hello: WireBody {
    public var wireMessage: WireMessage { .hello(self) }
    public static func body(of message: WireMessage) -> Hello? { if case .hello(let h) = message { return h } else { return nil } }
    public static var kind: String { "Hello" }
}

extension StepPlan: WireBody {
    public var wireMessage: WireMessage { .plan(self) }
    public static func body(of message: WireMessage) -> StepPlan? { if case .plan(let p) = message { return p } else { return nil } }
    public static var kind: String { "StepPlan" }
}

extension Shutdown: WireBody {
    public var wireMessage: WireMessage { .shutdown(self) }
    public static func body(of message: WireMessage) -> Shutdown? { if case .shutdown(let s) = message { return s } else { return nil } }
    public static var kind: String { "Shutdown" }
}

// MARK: - Swift -> C (encode)

/// C memory for one pack: every block is freed when the arena goes away.
private final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    func array<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<T>.stride,
                                                   alignment: MemoryLayout<T>.alignment)
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A message struct set to its defaults by the generated `*__init`.
    func make<T>(_ type: T.Type, _ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let p = array(T.self, count: 1)
        initialize(p)
        return p
    }

    /// Filled copy of `values` (nil when empty, as protobuf-c leaves it).
    func copy<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let p = array(T.self, count: values.count)
        p.initialize(from: values, count: values.count)
        return p
    }

    /// NUL-terminated UTF-8 copy; embedded NULs are dropped (they would end the C string).
    func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
        let bytes = s.utf8.filter { $0 != 0 }
        let p = array(CChar.self, count: bytes.count + 1)
        for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
        p[bytes.count] = 0
        return p
    }

    deinit { for b in blocks { b.deallocate() } }
}

extension Hello {
    fileprivate func cMessage(_ a: CArena) -> UnsafeMutablePointer<GemmaNode__Hello> {
        let m = a.make(GemmaNode__Hello.self, gemma_node__hello__init)
        m.pointee.protocol_version = protocolVersion
        m.pointee.model_fingerprint = a.cString(modelFingerprint)
        m.pointee.rank = rank
        m.pointee.world_size = worldSize
        m.pointee.host = a.cString(host)
        m.pointee.threads = threads
        return m
    }
}

extension SamplingParams {
    fileprivate func cMessage(_ a: CArena) -> UnsafeMutablePointer<GemmaNode__SamplingParams> {
        let m = a.make(GemmaNode__SamplingParams.self, gemma_node__sampling_params__init)
        m.pointee.temperature = temperature
        m.pointee.top_k = topK
        m.pointee.top_p = topP
        m.pointee.min_p = minP
        m.pointee.seed = seed
        return m
    }
}

extension SequenceWork {
    fileprivate func cMessage(_ a: CArena) -> UnsafeMutablePointer<GemmaNode__SequenceWork> {
        let m = a.make(GemmaNode__SequenceWork.self, gemma_node__sequence_work__init)
        m.pointee.slot = slot
        m.pointee.request_id = requestId
        m.pointee.n_token_ids = tokenIds.count
        m.pointee.token_ids = a.copy(tokenIds)
        m.pointee.start_position = startPosition
        m.pointee.is_prefill_chunk = isPrefillChunk ? 1 : 0
        m.pointee.want_logits = wantLogits ? 1 : 0
        m.pointee.sampling = sampling.cMessage(a)
        m.pointee.step_index_in_sequence = stepIndexInSequence
        // 0 = off; n + 1 = n alternatives (a value that does not fit is refused by validate).
        m.pointee.logprobs = logprobs.map { UInt32(clamping: $0 + 1) } ?? 0
        if !grammar.isEmpty {
            m.pointee.grammar.len = grammar.count
            m.pointee.grammar.data = a.copy(grammar)
        }
        m.pointee.grammar_max_tokens = grammarMaxTokens
        m.pointee.prefix_source_slot = prefixSourceSlot
        m.pointee.prefix_length = prefixLength
        return m
    }
}

extension StepPlan {
    fileprivate func cMessage(_ a: CArena) -> UnsafeMutablePointer<GemmaNode__StepPlan> {
        let m = a.make(GemmaNode__StepPlan.self, gemma_node__step_plan__init)
        m.pointee.protocol_version = protocolVersion
        m.pointee.step_id = stepId
        m.pointee.n_work = work.count
        m.pointee.work = a.copy(work.map { Optional($0.cMessage(a)) })
        m.pointee.n_free_slots = freeSlots.count
        m.pointee.free_slots = a.copy(freeSlots)
        m.pointee.shutdown = shutdown ? 1 : 0
        m.pointee.shutdown_reason = a.cString(shutdownReason)
        return m
    }
}

extension Shutdown {
    fileprivate func cMessage(_ a: CArena) -> UnsafeMutablePointer<GemmaNode__Shutdown> {
        let m = a.make(GemmaNode__Shutdown.self, gemma_node__shutdown__init)
        m.pointee.reason = a.cString(reason)
        m.pointee.error = error ? 1 : 0
        return m
    }
}

// MARK: - C -> Swift (decode)

/// A decoded C string, refusing lengths above `WireLimits.maxStringBytes` before copying.
/// Invalid UTF-8 is repaired (U+FFFD), never trusted.
private func swiftString(_ p: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let p else { return "" }
    let n = strnlenBounded(p, WireLimits.maxStringBytes + 1)
    guard n <= WireLimits.maxStringBytes else {
        throw WireError.invalidField(message: what, detail: "string longer than \(WireLimits.maxStringBytes) bytes")
    }
    return String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
}

/// Length of a NUL-terminated string, stopping at `limit`.
private func strnlenBounded(_ p: UnsafePointer<CChar>, _ limit: Int) -> Int {
    var n = 0
    while n < limit && p[n] != 0 { n += 1 }
    return n
}

/// Copy of a protobuf-c repeated scalar field, checking its count first.
private func swiftArray<T>(_ p: UnsafeMutablePointer<T>?, _ n: Int, limit: Int, _ what: String) throws -> [T] {
    guard n > 0 else { return [] }
    guard n <= limit else { throw WireError.invalidField(message: what, detail: "\(n) entries, more than \(limit)") }
    guard let p else { throw WireError.invalidField(message: what, detail: "\(n) entries but no data") }
    return Array(UnsafeBufferPointer(start: p, count: n))
}

extension Hello {
    fileprivate init(c: GemmaNode__Hello) throws {
        self.init(protocolVersion: c.protocol_version,
                  modelFingerprint: try swiftString(c.model_fingerprint, "Hello.model_fingerprint"),
                  rank: c.rank, worldSize: c.world_size,
                  host: try swiftString(c.host, "Hello.host"), threads: c.threads)
    }
}

extension SamplingParams {
    fileprivate init(c: GemmaNode__SamplingParams) {
        self.init(temperature: c.temperature, topK: c.top_k, topP: c.top_p, minP: c.min_p, seed: c.seed)
    }
}

extension SequenceWork {
    fileprivate init(c: GemmaNode__SequenceWork) throws {
        self.init(slot: c.slot, requestId: c.request_id,
                  tokenIds: try swiftArray(c.token_ids, c.n_token_ids, limit: WireLimits.maxTokensPerSequence, "SequenceWork.token_ids"),
                  startPosition: c.start_position, isPrefillChunk: c.is_prefill_chunk != 0,
                  wantLogits: c.want_logits != 0,
                  sampling: c.sampling.map { SamplingParams(c: $0.pointee) } ?? SamplingParams(),
                  stepIndexInSequence: c.step_index_in_sequence,
                  logprobs: c.logprobs == 0 ? nil : Int(c.logprobs) - 1,
                  grammar: try swiftArray(c.grammar.data, c.grammar.len, limit: WireLimits.maxGrammarBytes, "SequenceWork.grammar"),
                  grammarMaxTokens: c.grammar_max_tokens,
                  prefixSourceSlot: c.prefix_source_slot, prefixLength: c.prefix_length)
    }
}

extension StepPlan {
    fileprivate init(c: GemmaNode__StepPlan) throws {
        let workPointers = try swiftArray(c.work, c.n_work, limit: WireLimits.maxSequencesPerPlan, "StepPlan.work")
        let work = try workPointers.map { p -> SequenceWork in
            guard let p else { throw WireError.invalidField(message: "StepPlan.work", detail: "null entry") }
            return try SequenceWork(c: p.pointee)
        }
        self.init(protocolVersion: c.protocol_version, stepId: c.step_id, work: work,
                  freeSlots: try swiftArray(c.free_slots, c.n_free_slots, limit: WireLimits.maxFreeSlots, "StepPlan.free_slots"),
                  shutdown: c.shutdown != 0,
                  shutdownReason: try swiftString(c.shutdown_reason, "StepPlan.shutdown_reason"))
    }
}

extension Shutdown {
    fileprivate init(c: GemmaNode__Shutdown) throws {
        self.init(reason: try swiftString(c.reason, "Shutdown.reason"), error: c.error != 0)
    }
}

// MARK: - Framing check

/// Walks the top-level protobuf fields of bytes protobuf-c refused, to tell a cut-off
/// message from garbage. (Nested messages sit inside a top-level length, so a cut anywhere
/// shows up as that length running past the end.)
enum WireFraming {
    static func check(_ bytes: [UInt8]) -> WireError? {
        var at = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while at < bytes.count {
                let b = bytes[at]
                at += 1
                guard shift < 64 else { return nil }
                value |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        while at < bytes.count {
            guard let key = varint() else { return .truncated(byteCount: bytes.count) }
            guard key >> 3 != 0 else { return .garbage(byteCount: bytes.count, detail: "field number 0 at byte \(at)") }
            let needed: UInt64
            switch key & 7 {
            case 0:
                guard varint() != nil else { return .truncated(byteCount: bytes.count) }
                needed = 0
            case 1: needed = 8
            case 2:
                guard let n = varint() else { return .truncated(byteCount: bytes.count) }
                needed = n
            case 5: needed = 4
            default:
                return .garbage(byteCount: bytes.count, detail: "wire type \(key & 7) at byte \(at)")
            }
            guard needed <= UInt64(bytes.count - at) else { return .truncated(byteCount: bytes.count) }
            at += Int(needed)
        }
        return nil
    }
}
