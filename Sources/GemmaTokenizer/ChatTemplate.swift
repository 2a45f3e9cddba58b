// Gemma's chat formats rendered to prompt text (then encoded with parse-special and without an
// extra BOS, since the text already starts with `<bos>`). Two grammars: Gemma 1-3
// (`<start_of_turn>` / `<end_of_turn>`, system folded into the first user turn) and Gemma 4
// (`<|turn>` / `<turn|>`, a real system turn, thinking channel). This re-implements the
// released templates' behaviour; it is not a Jinja engine.
import Foundation

/// One chat message. Roles: "system" (or "developer" for Gemma 4), "user", "assistant"
/// (or "model"), "tool" (a function's result, answering an earlier assistant's `toolCalls`).
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    /// Assistant messages: the calls the model made (rendered after the text).
    public var toolCalls: [ToolCall]
    /// Tool messages: which call this answers (its function's name is looked up from it).
    public var toolCallId: String?
    /// Tool messages: the function's name, when given instead of (or besides) `toolCallId`.
    public var name: String?
    public init(role: String, content: String, toolCalls: [ToolCall] = [], toolCallId: String? = nil, name: String? = nil) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.toolCallId = toolCallId
        self.name = name
    }
}

/// A conversation that the template cannot render.
public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    case unknownRole(index: Int, role: String)
    case systemNotFirst(index: Int)
    case rolesMustAlternate(index: Int, expected: String, found: String)
    case unknownToolCall(index: Int, id: String)

    public var description: String {
        switch self {
        case let .unknownRole(i, r):
            return "chat message \(i) has role \"\(r)\"; expected system, user, assistant, model or tool"
        case let .unknownToolCall(i, id):
            return "chat message \(i) (role tool) answers tool_call_id \"\(id)\", which no earlier assistant message made (give \"name\" or a matching id)"
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
    /// ends with the opening of a model turn. `tools` are declared to the model (docs/SERVER.md
    /// "Tool calls" has both formats); `openToolCall` (with the generation prompt) also opens a
    /// call (Gemma 1-3: "```tool_call\n"; Gemma 4: `<|tool_call>`, after an empty thought
    /// channel even with thinking on), so a constrained generation writes the call itself.
    public func render(messages: [ChatMessage], tools: [ToolDefinition] = [], addGenerationPrompt: Bool,
                       openToolCall: Bool = false) throws -> String {
        let messages = try Self.namingToolResults(messages)
        switch format {
        case .gemma: return try renderGemma(messages, tools, addGenerationPrompt, openToolCall)
        case .gemma4: return try renderGemma4(messages, tools, addGenerationPrompt, openToolCall)
        }
    }

    /// Fills in each tool message's `name` from the earlier assistant call its `toolCallId`
    /// names (a tool message with neither a name nor a known id is refused).
    static func namingToolResults(_ messages: [ChatMessage]) throws -> [ChatMessage] {
        var names: [String: String] = [:]
        var out = messages
        for (i, m) in messages.enumerated() {
            for c in m.toolCalls { names[c.id] = c.name }
            guard m.role == "tool", m.name == nil else { continue }
            guard let id = m.toolCallId, let name = names[id] else {
                throw ChatTemplateError.unknownToolCall(index: i, id: m.toolCallId ?? "")
            }
            out[i].name = name
        }
        return out
    }

    /// Jinja's `trim` (Python `str.strip()`).
    private static func trim(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }

    private static func modelRole(_ r: String) -> Bool { r == "assistant" || r == "model" }

    private func renderGemma(_ messages: [ChatMessage], _ tools: [ToolDefinition], _ addGenerationPrompt: Bool,
                             _ openToolCall: Bool) throws -> String {
        var out = "<bos>"
        var prefix = ""
        var turns = messages[...]
        if let first = messages.first, first.role == "system" {
            // The system text (untrimmed) and a blank line open the first user turn.
            prefix = first.content + "\n\n"
            turns = messages.dropFirst()
        }
        if !tools.isEmpty { prefix += GemmaToolFormat.declarations(tools) + "\n\n" }
        // Tool results are a user turn (consecutive results, and a user message right after
        // them, share one).
        var merged: [(index: Int, user: Bool, text: String)] = []
        for (index, m) in zip(turns.indices, turns) {
            if m.role == "system" { throw ChatTemplateError.systemNotFirst(index: index) }
            guard m.role == "user" || m.role == "tool" || Self.modelRole(m.role) else {
                throw ChatTemplateError.unknownRole(index: index, role: m.role)
            }
            let text: String
            if m.role == "tool" {
                text = GemmaToolFormat.result(name: m.name ?? "", content: m.content)
            } else if Self.modelRole(m.role) {
                text = ([Self.trim(m.content)].filter { !$0.isEmpty } + m.toolCalls.map(GemmaToolFormat.call)).joined(separator: "\n")
            } else {
                text = Self.trim(m.content)
            }
            if let last = merged.last, last.user, m.role != "assistant", m.role != "model",
               messages[last.index].role == "tool" || m.role == "tool" {
                merged[merged.count - 1].text += "\n" + text
            } else {
                merged.append((index, !Self.modelRole(m.role), text))
            }
        }
        for (k, t) in merged.enumerated() {
            let wantUser = k % 2 == 0
            if t.user != wantUser {
                throw ChatTemplateError.rolesMustAlternate(index: t.index, expected: wantUser ? "user" : "assistant/model",
                                                           found: messages[t.index].role)
            }
            out += "<start_of_turn>\(t.user ? "user" : "model")\n" + (k == 0 ? prefix : "") + t.text + "<end_of_turn>\n"
        }
        if addGenerationPrompt {
            out += "<start_of_turn>model\n"
            if openToolCall { out += GemmaToolFormat.callOpening }
        }
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

    /// Gemma 4: a model turn that made calls stays open for the results
    /// (`<|tool_response>response:NAME{...}<tool_response|>` right after the calls) and for
    /// the model's next message, which continues it; a user message (or the end without a
    /// generation prompt) closes it. A generation prompt after results continues the open turn.
    private func renderGemma4(_ messages: [ChatMessage], _ tools: [ToolDefinition], _ addGenerationPrompt: Bool,
                              _ openToolCall: Bool) throws -> String {
        var out = "<bos>"
        var turns = messages[...]
        var system: String?
        if let first = messages.first, first.role == "system" || first.role == "developer" {
            system = first.content
            turns = messages.dropFirst()
        }
        if system != nil || enableThinking || !tools.isEmpty {
            out += "<|turn>system\n" + (enableThinking ? "<|think|>\n" : "") + Self.trim(system ?? "")
                + tools.map(Gemma4ToolFormat.declaration).joined() + "<turn|>\n"
        }
        var openModelTurn = false  // a model turn with calls, waiting for results
        for (index, m) in zip(turns.indices, turns) {
            if m.role == "system" || m.role == "developer" { throw ChatTemplateError.systemNotFirst(index: index) }
            guard m.role == "user" || m.role == "tool" || Self.modelRole(m.role) else {
                throw ChatTemplateError.unknownRole(index: index, role: m.role)
            }
            if m.role == "tool" {
                if !openModelTurn { out += "<|turn>model\n"; openModelTurn = true }
                out += Gemma4ToolFormat.result(name: m.name ?? "", content: m.content)
                continue
            }
            let isModel = Self.modelRole(m.role)
            if openModelTurn && !isModel { out += "<turn|>\n"; openModelTurn = false }
            if !openModelTurn { out += "<|turn>\(isModel ? "model" : "user")\n" }
            let text = isModel ? Self.stripThinking(m.content) : m.content
            out += Self.trim(text)
            if isModel && !m.toolCalls.isEmpty {
                out += m.toolCalls.map(Gemma4ToolFormat.call).joined()
                openModelTurn = true
            } else {
                out += "<turn|>\n"
                openModelTurn = false
            }
        }
        if addGenerationPrompt {
            if !openModelTurn {
                out += "<|turn>model\n"
                if !enableThinking || openToolCall { out += "<|channel>thought\n<channel|>" }
            }
            if openToolCall { out += "<|tool_call>" }
        } else if openModelTurn {
            out += "<turn|>\n"
        }
        return out
    }
}

extension GemmaTokenizer {
    /// Ids of a rendered conversation: the template writes `<bos>` itself, so no BOS is added
    /// here (exactly one BOS, GEMMA_SPEC §6.4); turn markup is parsed as special tokens.
    public func encodeChat(_ messages: [ChatMessage], template: ChatTemplate, tools: [ToolDefinition] = [], addGenerationPrompt: Bool = true,
                           openToolCall: Bool = false) throws -> [Int32] {
        encode(try template.render(messages: messages, tools: tools, addGenerationPrompt: addGenerationPrompt, openToolCall: openToolCall),
               addSpecial: false, parseSpecial: true)
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
