// Tool calls and reasoning on the chat endpoint (docs/SERVER.md "Tool calls and reasoning"):
// reading `tools` / `tool_choice` / the thinking switches from a request, the grammar of a
// forced call, and `AssistantOutputSplitter`, which cuts generated text into content,
// reasoning and call blocks as it streams. Streaming and non-streaming responses are both
// made from its pieces, so they agree.
import Foundation
import GemmaEngine
import GemmaTokenizer
import GemmaWire

/// What `tool_choice` asks for.
public enum ToolChoice: Sendable, Equatable {
    /// No tools in the prompt, output is plain content.
    case none
    /// Tools declared; the output is parsed for calls.
    case auto
    /// A call is forced to one of these functions (`required`: any of the tools; a named
    /// function: that one), its arguments constrained by the grammar.
    case forced([String])
}

/// The tool and reasoning part of a chat request.
public struct ToolRequest: Sendable {
    public var tools: [ToolDefinition] = []
    public var choice: ToolChoice = .none
    /// Gemma 4 thinking (ignored by Gemma 1-3).
    public var thinking = false

    /// Reads `tools`, `tool_choice`, `reasoning_effort` and `chat_template_kwargs.enable_thinking`
    /// from the body (schemas keep their member order). 400s name the field.
    static func parse(_ body: JSONValue?) throws -> ToolRequest {
        var r = ToolRequest()
        if let list = body?["tools"], list.array != nil || list.members != nil {
            guard let a = list.array else { throw APIError.badRequest("tools must be a list", param: "tools") }
            for (i, t) in a.enumerated() {
                guard t["type"]?.string == "function", let f = t["function"], f.members != nil else {
                    throw APIError.badRequest("tools[\(i)] must be {\"type\": \"function\", \"function\": {...}}", param: "tools")
                }
                guard let name = f["name"]?.string, !name.isEmpty,
                      name.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || "_-.".unicodeScalars.contains($0) }) else {
                    throw APIError.badRequest("tools[\(i)].function.name must be a non-empty name of letters, digits, _, - and .", param: "tools")
                }
                guard !r.tools.contains(where: { $0.name == name }) else {
                    throw APIError.badRequest("tools: function \"\(name)\" is declared twice", param: "tools")
                }
                let params = f["parameters"]
                if let params, params.members == nil {
                    throw APIError.badRequest("tools[\(i)].function.parameters must be a JSON Schema object", param: "tools")
                }
                r.tools.append(ToolDefinition(name: name, description: f["description"]?.string, parameters: params))
            }
        }
        let choice = body?["tool_choice"]
        switch choice {
        case nil, .null?:
            r.choice = r.tools.isEmpty ? .none : .auto
        case let .string(s)?:
            switch s {
            case "none": r.choice = .none
            case "auto": r.choice = r.tools.isEmpty ? .none : .auto
            case "required":
                guard !r.tools.isEmpty else { throw APIError.badRequest("tool_choice \"required\" needs tools", param: "tool_choice") }
                r.choice = .forced(r.tools.map(\.name))
            default:
                throw APIError.badRequest("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                                          param: "tool_choice")
            }
        case let c?:
            guard c["type"]?.string == "function", let name = c["function"]?["name"]?.string else {
                throw APIError.badRequest("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                                          param: "tool_choice")
            }
            guard r.tools.contains(where: { $0.name == name }) else {
                throw APIError.badRequest("tool_choice names function \"\(name)\", which is not in tools", param: "tool_choice")
            }
            r.choice = .forced([name])
        }
        // Thinking: chat_template_kwargs.enable_thinking when given, else reasoning_effort
        // (any value but "none" turns it on; Gemma 4 has no graded effort).
        if let kwargs = body?["chat_template_kwargs"], case .object = kwargs, let flag = kwargs["enable_thinking"] {
            guard let b = flag.bool else {
                throw APIError.badRequest("chat_template_kwargs.enable_thinking must be a boolean", param: "chat_template_kwargs")
            }
            r.thinking = b
        } else if let effort = body?["reasoning_effort"] {
            switch effort {
            case .null: break
            case let .string(s): r.thinking = s != "none"
            default: throw APIError.badRequest("reasoning_effort must be a string", param: "reasoning_effort")
            }
        }
        return r
    }

    /// The tools a forced call may use.
    var forcedTools: [ToolDefinition] {
        guard case let .forced(names) = choice else { return [] }
        return tools.filter { names.contains($0.name) }
    }

    /// A forced call's grammar: the call block's text from after its opening (Gemma 1-3:
    /// `{"name": "NAME", "arguments": ` + arguments + `}`; Gemma 4: `call:NAME` + arguments as
    /// a JSON object), the arguments held to the function's `parameters`. A keyword outside
    /// the grammar's subset is a 400 naming it.
    func forcedGrammar(_ format: ChatFormat) throws -> (grammar: JSONGrammar, text: [UInt8])? {
        let forced = forcedTools
        guard !forced.isEmpty else { return nil }
        let anyObject = JSONValue.object(keys: ["type"], values: [.string("object")])
        let alternatives = forced.map { t -> (prefix: String, schema: JSONValue, suffix: String) in
            switch format {
            case .gemma: return (GemmaToolFormat.callPrefix(t.name), t.parameters ?? anyObject, "}")
            case .gemma4: return ("call:" + t.name, t.parameters ?? anyObject, "")
            }
        }
        for t in forced {
            do { _ = try JSONGrammar(schema: t.parameters ?? anyObject) } catch let e as GrammarError {
                throw APIError.badRequest(e.message.replacingOccurrences(of: "response_format:", with: "tools: function \"\(t.name)\" parameters:"),
                                          param: "tools")
            }
        }
        let schema = JSONGrammar.tagged(alternatives)
        let text = JSONValue.serialize(schema)
        guard text.count <= WireLimits.maxGrammarBytes else {
            throw APIError.badRequest("tools: the forced call's grammar takes \(text.count) bytes, more than \(WireLimits.maxGrammarBytes)", param: "tools")
        }
        do {
            return (try JSONGrammar(schema: schema, allowTagged: true), text)
        } catch let e as GrammarError {
            throw APIError.badRequest("tools: \(e.message)", param: "tools")
        }
    }
}

/// Whether a value meets a JSON Schema, for the keywords the grammar knows (`type`,
/// `properties`, `required`, `additionalProperties` false, `items`, `minItems`, `maxItems`,
/// `enum`, `const`); other keywords are not checked. Used on calls parsed with `auto`, which
/// no grammar held.
enum SchemaCheck {
    static func valid(_ v: JSONValue, _ schema: JSONValue?) -> Bool {
        guard let schema else { return true }
        if case let .bool(b) = schema { return b }
        guard schema.members != nil else { return true }
        if let c = schema["const"], JSONValue.serialize(c) != JSONValue.serialize(v) { return false }
        if let e = schema["enum"]?.array, !e.contains(where: { JSONValue.serialize($0) == JSONValue.serialize(v) }) { return false }
        if let t = schema["type"] {
            let types = t.string.map { [$0] } ?? t.array?.compactMap(\.string) ?? []
            if !types.isEmpty && !types.contains(where: { JSONGrammar.matches(v, type: $0) || ($0 == "number" && JSONGrammar.matches(v, type: "integer")) }) {
                return false
            }
        }
        switch v {
        case let .object(keys, values):
            let props = schema["properties"]?.members ?? []
            for r in schema["required"]?.array?.compactMap(\.string) ?? [] where !keys.contains(r) { return false }
            for (k, x) in zip(keys, values) {
                if let p = props.first(where: { $0.0 == k }) {
                    if !valid(x, p.1) { return false }
                } else if case .bool(false)? = schema["additionalProperties"] {
                    return false
                }
            }
        case let .array(items):
            if let n = schema["minItems"]?.int, items.count < n { return false }
            if let n = schema["maxItems"]?.int, items.count > n { return false }
            if let s = schema["items"], !items.allSatisfy({ valid($0, s) }) { return false }
        default: break
        }
        return true
    }
}

/// A piece of a chat answer.
public enum AnswerPiece: Sendable, Equatable {
    case content(String)
    case reasoning(String)
    /// A forced call has begun: its function (streams send a first tool-call delta with it).
    case callStart(String)
    /// More of the forced call's arguments, as generated (streams send them as fragments).
    case callArguments(String)
}

/// Cuts generated text (with Gemma 4's structural markers written as their pieces, see
/// `structuralMarkers`) into content, reasoning and call blocks, as it streams.
/// - Gemma 4: `<|channel>NAME\n...<channel|>` is reasoning (the channel name dropped);
///   `<|tool_call>...<tool_call|>` a call block; any other structural marker outside a block
///   is dropped (never text).
/// - Gemma 1-3 with tools: "```tool_call" ... "```" is a call block.
/// Text that may be the start of a marker is held back until it is known. From the first
/// call block on, content is held to the end: when every block is a valid call (name among
/// the tools, arguments meeting its schema) the calls are the answer with the held content
/// outside the blocks; otherwise all of it comes back as content, in order.
public struct AssistantOutputSplitter {
    /// The marker strings Gemma 4's answer structure uses (tokens `GemmaTokenizer` renders as
    /// text only for this splitter).
    public static let structuralMarkers = ["<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", Gemma4ToolFormat.quote]

    enum State { case content, channelName, reasoning, call }

    let format: ChatFormat
    let tools: [ToolDefinition]
    let parseCalls: Bool
    /// A forced call: its arguments are streamed as they come (`callStart`, `callArguments`);
    /// the grammar guarantees the call, so nothing has to be held back for validation.
    let forced: Bool
    /// Forced call: scalars of `block` before the arguments (nil until the function is known),
    /// and how many argument scalars have been passed on.
    var argumentsStart: Int?
    var argumentsSent = 0
    var state: State
    var held = ""
    var block = ""
    var blocks: [String] = []
    /// From the first call block on, in order: text outside blocks (`block` false) and call
    /// blocks (`closed`: their closing marker came).
    var after: [(block: Bool, closed: Bool, text: String)] = []
    var sawCall = false

    public init(format: ChatFormat, tools: [ToolDefinition], choice: ToolChoice) {
        self.format = format
        self.tools = tools
        parseCalls = choice != .none && !tools.isEmpty
        if case .forced = choice, !tools.isEmpty { state = .call; sawCall = true; forced = true } else { state = .content; forced = false }
    }

    /// The text before a forced call's arguments for `name` (the grammar's prefix).
    func forcedPrefix(_ name: String) -> String {
        format == .gemma ? GemmaToolFormat.callPrefix(name) : "call:" + name
    }

    /// Forced call: the function once its prefix is complete (the next scalar starts the
    /// arguments, so a name that is a prefix of another is not taken early), then the
    /// arguments without leading whitespace, holding back what may be the call's suffix
    /// (Gemma 1-3's closing "}").
    private mutating func forcedProgress(_ out: inout [AnswerPiece], final: Bool) {
        let scalars = Array(block.unicodeScalars)
        if argumentsStart == nil {
            for t in tools {
                let p = Array(forcedPrefix(t.name).unicodeScalars)
                guard scalars.count > p.count, Array(scalars[0..<p.count]) == p,
                      scalars[p.count] == "{" || scalars[p.count] == " " || scalars[p.count] == "\n" else { continue }
                argumentsStart = p.count
                out.append(.callStart(t.name))
                break
            }
        }
        guard var start = argumentsStart else { return }
        while argumentsSent == 0 && start < scalars.count && (scalars[start] == " " || scalars[start] == "\n") { start += 1 }
        argumentsStart = start
        let hold = format == .gemma ? 1 : 0
        let end = final ? scalars.count - hold : max(start, scalars.count - hold)
        guard end > start + argumentsSent else { return }
        var text = String.UnicodeScalarView()
        text.append(contentsOf: scalars[(start + argumentsSent)..<end])
        argumentsSent = end - start
        out.append(.callArguments(String(text)))
    }

    var markers: [String] {
        switch (format, state) {
        case (.gemma, .call): return [GemmaToolFormat.blockClose]
        case (.gemma, _): return parseCalls ? ["```tool_call"] : []
        case (.gemma4, _): return Self.structuralMarkers
        }
    }

    /// Adds text; returns the pieces that are known now.
    public mutating func push(_ text: String) -> [AnswerPiece] {
        var out: [AnswerPiece] = []
        var rest = held + text
        held = ""
        while !rest.isEmpty {
            let ms = markers
            var best: (Range<String.Index>, String)?
            for m in ms {
                if let r = rest.range(of: m), best == nil || r.lowerBound < best!.0.lowerBound { best = (r, m) }
            }
            if let (r, m) = best {
                take(String(rest[..<r.lowerBound]), &out)
                rest = String(rest[r.upperBound...])
                marker(m)
                continue
            }
            // Hold the longest suffix that could begin a marker.
            var keep = 0
            let scalars = Array(rest.unicodeScalars)
            for m in ms {
                let ms = Array(m.unicodeScalars)
                for k in stride(from: min(ms.count - 1, scalars.count), to: keep, by: -1)
                where Array(scalars[(scalars.count - k)...]) == Array(ms[0..<k]) { keep = k; break }
            }
            let cut = rest.unicodeScalars.index(rest.unicodeScalars.endIndex, offsetBy: -keep)
            take(String(rest.unicodeScalars[..<cut]), &out)
            held = String(rest.unicodeScalars[cut...])
            rest = ""
        }
        return out
    }

    private mutating func take(_ text: String, _ out: inout [AnswerPiece]) {
        guard !text.isEmpty else { return }
        switch state {
        case .content:
            if sawCall { after.append((false, false, text)) } else { out.append(.content(text)) }
        case .channelName:
            if let nl = text.firstIndex(of: "\n") {
                state = .reasoning
                take(String(text[text.index(after: nl)...]), &out)
            }
        case .reasoning:
            out.append(.reasoning(text))
        case .call:
            block += text
            if forced { forcedProgress(&out, final: false) }
        }
    }

    private mutating func marker(_ m: String) {
        switch (format, state, m) {
        case (.gemma, .content, _), (.gemma4, .content, "<|tool_call>"):
            if parseCalls { state = .call; sawCall = true; block = "" }
        case (.gemma, .call, _), (.gemma4, .call, "<tool_call|>"):
            endBlock(closed: true)
            state = .content
        case (.gemma4, .call, Gemma4ToolFormat.quote):
            block += m  // the native string delimiter, read by the call parser
        case (.gemma4, .content, "<|channel>"):
            state = .channelName
        case (.gemma4, .channelName, "<channel|>"), (.gemma4, .reasoning, "<channel|>"):
            state = .content
        default:
            break  // a marker with no meaning here: dropped
        }
    }

    private mutating func endBlock(closed: Bool) {
        blocks.append(block)
        after.append((true, closed, block))
        block = ""
    }

    /// Ends the text: the remaining pieces, and the calls (empty when there are none or any
    /// block is not a valid call; the held text then comes back as content).
    public mutating func finish(callId: (Int) -> String) -> ([AnswerPiece], [ToolCall]) {
        var out: [AnswerPiece] = []
        let rest = held
        held = ""
        take(rest, &out)
        if forced && state == .call { forcedProgress(&out, final: true) }
        if state == .call { endBlock(closed: false); state = .content }
        guard sawCall else { return (out, []) }
        var calls: [ToolCall] = []
        for b in blocks {
            let parsed = format == .gemma ? GemmaToolFormat.parseCall(b) : Gemma4ToolFormat.parseCall(b)
            guard let (name, args) = parsed, let tool = tools.first(where: { $0.name == name }),
                  SchemaCheck.valid(args, tool.parameters) else { calls = []; break }
            var call = ToolCall(id: callId(calls.count), name: name, arguments: args)
            if forced, let start = argumentsStart {
                // The arguments exactly as streamed (the grammar made them valid JSON).
                let scalars = Array(b.unicodeScalars)
                var text = String.UnicodeScalarView()
                text.append(contentsOf: scalars[start..<max(start, scalars.count - (format == .gemma ? 1 : 0))])
                call.text = String(text)
            }
            calls.append(call)
        }
        if calls.count == blocks.count && !calls.isEmpty {
            let text = after.filter { !$0.block }.map(\.text).joined().trimmingCharacters(in: .whitespacesAndNewlines)
            if !text.isEmpty { out.append(.content(text)) }
            return (out, calls)
        }
        // Not calls: the text as it came (Gemma 4's string delimiter as a quote mark).
        let opening = format == .gemma ? GemmaToolFormat.callOpening.dropLast() : ""
        let text = after.map { $0.block ? String(opening) + $0.text.replacingOccurrences(of: Gemma4ToolFormat.quote, with: "\"")
                                            + (format == .gemma && $0.closed ? GemmaToolFormat.blockClose : "") : $0.text }.joined()
        if !text.isEmpty { out.append(.content(text)) }
        return (out, [])
    }
}
