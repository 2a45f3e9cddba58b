// Typed failures of the control-plane wire: undecodable bytes, version or model mismatches
// between ranks, and decoded contents that would be unsafe to act on.

/// Why bytes could not become a `WireMessage`, or why two ranks cannot work together.
public enum WireError: Error, Equatable, CustomStringConvertible {
    /// Zero bytes received.
    case empty
    /// The bytes end inside a field (a length or varint runs past the end).
    case truncated(byteCount: Int)
    /// Well-framed or not, the bytes are not a message this build understands.
    case garbage(byteCount: Int, detail: String)
    /// The envelope carries no body this build knows (only field numbers it does not know).
    case unknownMessage(fieldNumbers: [UInt32])
    /// The sender speaks another protocol version.
    case versionMismatch(remote: UInt32, local: UInt32)
    /// A Hello from `rank` speaks another protocol version.
    case rankVersionMismatch(rank: UInt32, remote: UInt32, local: UInt32)
    /// A Hello from `rank` names another model.
    case fingerprintMismatch(rank: UInt32, remote: String, local: String)
    /// A Hello from `rank` disagrees about the world.
    case worldMismatch(rank: UInt32, detail: String)
    /// Decoded fine, but a field is out of range (see `WireLimits`).
    case invalidField(message: String, detail: String)
    /// A specific message was expected and another arrived.
    case unexpectedMessage(expected: String, got: String)

    public var description: String {
        switch self {
        case .empty:
            return "wire: received an empty message"
        case .truncated(let n):
            return "wire: message truncated (\(n) bytes end inside a field)"
        case .garbage(let n, let detail):
            return "wire: \(n) bytes are not a gemma-node message (\(detail))"
        case .unknownMessage(let fields):
            let list = fields.map(String.init).joined(separator: ", ")
            return "wire: envelope carries an unknown message (field numbers \(list)); is the sender built from a newer commit?"
        case .versionMismatch(let remote, let local):
            return "wire: sender speaks protocol version \(remote), this rank speaks \(local); rebuild all ranks from the same commit"
        case .rankVersionMismatch(let rank, let remote, let local):
            return "rank \(rank) speaks protocol version \(remote), coordinator speaks \(local); rebuild all ranks from the same commit"
        case .fingerprintMismatch(let rank, let remote, let local):
            return "rank \(rank) loaded model \"\(remote)\", coordinator loaded \"\(local)\"; start every rank with the same model file"
        case .worldMismatch(let rank, let detail):
            return "rank \(rank) disagrees about the world: \(detail)"
        case .invalidField(let message, let detail):
            return "wire: invalid \(message): \(detail)"
        case .unexpectedMessage(let expected, let got):
            return "wire: expected a \(expected), received a \(got)"
        }
    }
}

/// Bounds decode enforces so a consumer can index and allocate from decoded values safely.
/// Far above anything the engine plans (a step is at most a few thousand tokens).
public enum WireLimits {
    /// Bytes in any string field (host, fingerprint, reasons).
    public static let maxStringBytes = 4096
    /// Sequences in one plan.
    public static let maxSequencesPerPlan = 4096
    /// Tokens of one sequence in one plan (a prefill chunk).
    public static let maxTokensPerSequence = 1 << 20
    /// Tokens of all sequences in one plan.
    public static let maxTokensPerPlan = 1 << 22
    /// Entries of `StepPlan.freeSlots`.
    public static let maxFreeSlots = 65_536
    /// Alternatives per token in `SequenceWork.logprobs` (OpenAI's `top_logprobs` maximum).
    public static let maxTopLogprobs = 20
    /// Bytes of a structured-output schema (`SequenceWork.grammar`).
    public static let maxGrammarBytes = 65_536
    /// Ranks in a world.
    public static let maxWorldSize: UInt32 = 65_536
}
