// Gemma's chat formats rendered to prompt text (then encoded with parse-special and without an
// extra BOS, since the text already starts with `<bos>`). Two grammars: Gemma 1-3
// (`<start_of_turn>` / `<end_of_turn>`, system folded into the first user turn) and Gemma 4
// (`<|turn>` / `<turn|>`, a real system turn, thinking channel). This re-implements the
// released templates' behaviour; it is not a Jinja engine.
import Foundation

/// One chat message. Roles: "system" (or "developer" for Gemma 4), "user", "assistant"
/// (or "model").
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// A conversation that the template cannot render.
public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    case unknownRole(index: Int, role: String)
    case systemNotFirst(index: Int)
    case rolesMustAlternate(index: Int, expected: String, found: String)

    public var description: String {
        switch self {
        case let .unknownRole(i, r):
            return "chat message \(i) has role \"\(r)\"; expected system, user, assistant or model"
        case let .systemNotFirst(i):
            return "chat message \(i) is a system message; only the first message may be one"
        case let .rolesMustAlternate(i, e, f):
            return "chat message \(i) has role \(f) but \(e) was expected: Gemma conversations alternate user/model, starting with user (after an optional system message)"
        }
    }
}

/// Which turn grammar a model uses.
public enum ChatFormat: Sendable, Equatable {
    /// Gemma 1, 2 and 3: `<start_of_turn>user` / `<start_of_turn>model`, no system role.
    case gemma
    /// Gemma 4: `<|turn>system|user|model`, optional thinking.
    case gemma4
}

/// Renders conversations in a Gemma chat format.
public struct ChatTemplate: Sendable, Equatable {
    public var format: ChatFormat
    /// Gemma 4 only: ask for reasoning (`<|think|>` in the system turn). When off, the
    /// generation prompt carries an empty thought channel so the model answers directly.
    public var enableThinking: Bool

    public init(format: ChatFormat, enableThinking: Bool = false) {
        self.format = format
        self.enableThinking = enableThinking
    }

    /// The format for a GGUF `general.architecture` / HF `model_type` ("gemma4*" → Gemma 4).
    public init(architecture: String) {
        self.init(format: architecture.hasPrefix("gemma4") ? .gemma4 : .gemma)
    }

    /// The prompt text for `messages`, starting with `<bos>`; with `addGenerationPrompt` it
    /// ends with the opening of a model turn.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        switch format {
        case .gemma: return try renderGemma(messages, addGenerationPrompt)
        case .gemma4: return try renderGemma4(messages, addGenerationPrompt)
        }
    }

    /// Jinja's `trim` (Python `str.strip()`).
    private static func trim(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }

    private static func modelRole(_ r: String) -> Bool { r == "assistant" || r == "model" }

    private func renderGemma(_ messages: [ChatMessage], _ addGenerationPrompt: Bool) throws -> String {
        var out = "<bos>"
        var prefix = ""
        var turns = messages[...]
        if let first = messages.first, first.role == "system" {
            // The system text (untrimmed) and a blank line open the first user turn.
            prefix = first.content + "\n\n"
            turns = messages.dropFirst()
        }
        for (k, (index, m)) in zip(turns.indices, turns).enumerated() {
            let wantUser = k % 2 == 0
            if m.role == "system" { throw ChatTemplateError.systemNotFirst(index: index) }
            guard m.role == "user" || Self.modelRole(m.role) else { throw ChatTemplateError.unknownRole(index: index, role: m.role) }
            if (m.role == "user") != wantUser {
                throw ChatTemplateError.rolesMustAlternate(index: index, expected: wantUser ? "user" : "assistant/model", found: m.role)
            }
            let role = m.role == "user" ? "user" : "model"
            out += "<start_of_turn>\(role)\n" + (k == 0 ? prefix : "") + Self.trim(m.content) + "<end_of_turn>\n"
        }
        if addGenerationPrompt { out += "<start_of_turn>model\n" }
        return out
    }

    /// Removes `<|channel>…<channel|>` blocks (earlier turns' reasoning is not replayed).
    static func stripThinking(_ s: String) -> String {
        var out = ""
        var rest = s[...]
        while let open = rest.range(of: "<|channel>") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "<channel|>") else { rest = ""; break }
            rest = rest[close.upperBound...]
        }
        return out + rest
    }

    private func renderGemma4(_ messages: [ChatMessage], _ addGenerationPrompt: Bool) throws -> String {
        var out = "<bos>"
        var turns = messages[...]
        var system: String?
        if let first = messages.first, first.role == "system" || first.role == "developer" {
            system = first.content
            turns = messages.dropFirst()
        }
        if system != nil || enableThinking {
            out += "<|turn>system\n" + (enableThinking ? "<|think|>\n" : "") + Self.trim(system ?? "") + "<turn|>\n"
        }
        for (index, m) in zip(turns.indices, turns) {
            if m.role == "system" || m.role == "developer" { throw ChatTemplateError.systemNotFirst(index: index) }
            guard m.role == "user" || Self.modelRole(m.role) else { throw ChatTemplateError.unknownRole(index: index, role: m.role) }
            let isModel = Self.modelRole(m.role)
            let text = isModel ? Self.stripThinking(m.content) : m.content
            out += "<|turn>\(isModel ? "model" : "user")\n" + Self.trim(text) + "<turn|>\n"
        }
        if addGenerationPrompt {
            out += "<|turn>model\n"
            if !enableThinking { out += "<|channel>thought\n<channel|>" }
        }
        return out
    }
}

extension GemmaTokenizer {
    /// Ids of a rendered conversation: the template writes `<bos>` itself, so no BOS is added
    /// here (exactly one BOS, GEMMA_SPEC §6.4); turn markup is parsed as special tokens.
    public func encodeChat(_ messages: [ChatMessage], template: ChatTemplate, addGenerationPrompt: Bool = true) throws -> [Int32] {
        encode(try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt), addSpecial: false, parseSpecial: true)
    }

    /// Tokens that end a generation (llama.cpp's end-of-generation set for Gemma): EOS and the
    /// end-of-turn marker of either grammar (`<end_of_turn>` for Gemma 1-3, `<turn|>` for Gemma 4).
    public var endOfGenerationIDs: [Int32] {
        var ids: [Int32] = []
        if let eos = eosID { ids.append(eos) }
        for marker in ["<end_of_turn>", "<turn|>"] {
            if let id = id(of: marker), types[Int(id)] == .control, !ids.contains(id) { ids.append(id) }
        }
        return ids
    }
}
