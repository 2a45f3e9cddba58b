// How tools, calls and results are written in prompts and read back from generated text.
// Gemma 4 has a native format (GEMMA_SPEC §A4.4): `<|tool>declaration:NAME{...}<tool|>` in the
// system turn, `<|tool_call>call:NAME{key:value,...}<tool_call|>` and
// `<|tool_response>response:NAME{...}<tool_response|>`, strings between `<|"|>` tokens. Gemma
// 1-3 have none; this server's format for them (docs/SERVER.md "Tool calls") puts the functions
// as JSON in the first user turn and expects a call as a JSON object in a fenced block:
//     ```tool_call
//     {"name": "NAME", "arguments": {...}}
//     ```
import Foundation

/// A function the model may call (OpenAI's `tools[].function`).
public struct ToolDefinition: Sendable {
    public var name: String
    public var description: String?
    /// JSON Schema of the arguments (nil: any object).
    public var parameters: JSONValue?
    public init(name: String, description: String? = nil, parameters: JSONValue? = nil) {
        self.name = name
        self.description = description
        self.parameters = parameters
    }
}

/// A call the model made (or an earlier assistant message carries).
public struct ToolCall: Sendable, Equatable {
    public var id: String
    public var name: String
    public var arguments: JSONValue
    /// The arguments' JSON text as generated, when they were generated as JSON (a forced
    /// call); nil: write `arguments`.
    public var text: String?
    public init(id: String, name: String, arguments: JSONValue, text: String? = nil) {
        self.id = id
        self.name = name
        self.arguments = arguments
        self.text = text
    }

    public static func == (a: ToolCall, b: ToolCall) -> Bool {
        a.id == b.id && a.name == b.name && JSONValue.serialize(a.arguments) == JSONValue.serialize(b.arguments)
    }
}

/// Gemma 1-3: the server's own tool format (JSON in fenced blocks).
public enum GemmaToolFormat {
    /// Opens a call block; a forced call's prompt ends with it.
    public static let callOpening = "```tool_call\n"
    public static let blockClose = "```"

    /// The instructions and the functions, put at the start of the first user turn.
    public static func declarations(_ tools: [ToolDefinition]) -> String {
        var lines = ["You can call functions. To call one, answer with only a block like this:",
                     callOpening + #"{"name": "NAME", "arguments": {...}}"# + "\n" + blockClose,
                     "The arguments must follow the function's JSON Schema \"parameters\". The functions:"]
        for t in tools {
            var keys = ["name"], values: [JSONValue] = [.string(t.name)]
            if let d = t.description { keys.append("description"); values.append(.string(d)) }
            if let p = t.parameters { keys.append("parameters"); values.append(p) }
            lines.append(String(decoding: JSONValue.serialize(.object(keys: keys, values: values)), as: UTF8.self))
        }
        return lines.joined(separator: "\n")
    }

    /// The text a call's block holds up to its arguments (a forced call's grammar starts here).
    public static func callPrefix(_ name: String) -> String {
        #"{"name": "# + String(decoding: JSONValue.serialize(.string(name)), as: UTF8.self) + #", "arguments": "#
    }

    /// A call as its block.
    public static func call(_ c: ToolCall) -> String {
        callOpening + callPrefix(c.name) + String(decoding: JSONValue.serialize(c.arguments), as: UTF8.self) + "}\n" + blockClose
    }

    /// A tool's result: its content as JSON when it is JSON, else as a string.
    public static func result(name: String, content: String) -> String {
        let value = (try? JSONValue.parse(Array(content.utf8))) ?? .string(content)
        return "```tool_response\n" + String(decoding: JSONValue.serialize(.object(keys: ["name", "content"], values: [.string(name), value])),
                                                as: UTF8.self) + "\n" + blockClose
    }

    /// A call block's body (the text between the opening and the closing fence) as a name and
    /// arguments: a JSON object with a string "name" and an object "arguments" (or a string
    /// holding one). Nil when it is not one.
    public static func parseCall(_ body: String) -> (name: String, arguments: JSONValue)? {
        guard let v = try? JSONValue.parse(Array(body.trimmingCharacters(in: .whitespacesAndNewlines).utf8)),
              let name = v["name"]?.string else { return nil }
        var args = v["arguments"] ?? .object(keys: [], values: [])
        if let s = args.string, let parsed = try? JSONValue.parse(Array(s.utf8)) { args = parsed }
        guard args.members != nil else { return nil }
        return (name, args)
    }
}

/// Gemma 4's native tool format.
public enum Gemma4ToolFormat {
    /// The string delimiter token's text.
    public static let quote = "<|\"|>"

    public static func declaration(_ t: ToolDefinition) -> String {
        var keys: [String] = [], values: [JSONValue] = []
        if let d = t.description { keys.append("description"); values.append(.string(d)) }
        if let p = t.parameters { keys.append("parameters"); values.append(p) }
        return "<|tool>declaration:" + t.name + write(.object(keys: keys, values: values)) + "<tool|>"
    }

    public static func call(_ c: ToolCall) -> String {
        "<|tool_call>call:" + c.name + write(c.arguments) + "<tool_call|>"
    }

    /// A result: a JSON object's members as they are, any other content under `value`.
    public static func result(name: String, content: String) -> String {
        let parsed = try? JSONValue.parse(Array(content.utf8))
        let value: JSONValue = parsed?.members != nil ? parsed! : .object(keys: ["value"], values: [parsed ?? .string(content)])
        return "<|tool_response>response:" + name + write(value) + "<tool_response|>"
    }

    /// A value in the native syntax: keys bare and sorted, strings between `<|"|>`.
    public static func write(_ v: JSONValue) -> String {
        switch v {
        case let .string(s): return quote + s + quote
        case .number, .bool, .null: return String(decoding: JSONValue.serialize(v), as: UTF8.self)
        case let .array(a): return "[" + a.map(write).joined(separator: ",") + "]"
        case let .object(keys, values):
            let pairs = zip(keys, values).sorted { $0.0 < $1.0 }
            return "{" + pairs.map { $0.0 + ":" + write($0.1) }.joined(separator: ",") + "}"
        }
    }

    /// A call block's body (between `<|tool_call>` and `<tool_call|>`): `call:NAME{...}`, the
    /// arguments in the native syntax or as JSON (a forced call is constrained as JSON). Nil
    /// when it is neither.
    public static func parseCall(_ body: String) -> (name: String, arguments: JSONValue)? {
        let text = body.trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("call:"), let brace = text.firstIndex(of: "{") else { return nil }
        let name = String(text[text.index(text.startIndex, offsetBy: 5)..<brace]).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty else { return nil }
        var p = NativeParser(Array(text[brace...].unicodeScalars))
        guard let v = p.value(), v.members != nil else { return nil }
        p.skipSpace()
        guard p.atEnd else { return nil }
        return (name, v)
    }

    /// Reads the native syntax and JSON alike: keys bare or quoted, strings between `<|"|>` or
    /// in JSON quotes.
    struct NativeParser {
        let s: [Unicode.Scalar]
        var i = 0
        var depth = 0
        init(_ s: [Unicode.Scalar]) { self.s = s }
        var atEnd: Bool { i >= s.count }
        static let quoteScalars = Array(Gemma4ToolFormat.quote.unicodeScalars)

        mutating func skipSpace() { while i < s.count, s[i] == " " || s[i] == "\n" || s[i] == "\t" || s[i] == "\r" { i += 1 } }

        func startsQuote(_ at: Int) -> Bool {
            at + Self.quoteScalars.count <= s.count && Array(s[at..<(at + Self.quoteScalars.count)]) == Self.quoteScalars
        }

        mutating func value() -> JSONValue? {
            skipSpace()
            guard i < s.count, depth < 64 else { return nil }
            if startsQuote(i) {
                i += Self.quoteScalars.count
                var out = String.UnicodeScalarView()
                while i < s.count && !startsQuote(i) { out.append(s[i]); i += 1 }
                guard i < s.count else { return nil }
                i += Self.quoteScalars.count
                return .string(String(out))
            }
            switch s[i] {
            case "\"":
                return jsonString().map { .string($0) }
            case "{":
                i += 1; depth += 1
                defer { depth -= 1 }
                var keys: [String] = [], values: [JSONValue] = []
                skipSpace()
                if i < s.count, s[i] == "}" { i += 1; return .object(keys: keys, values: values) }
                while true {
                    skipSpace()
                    guard let k = key() else { return nil }
                    skipSpace()
                    guard i < s.count, s[i] == ":" else { return nil }
                    i += 1
                    guard let v = value() else { return nil }
                    keys.append(k); values.append(v)
                    skipSpace()
                    guard i < s.count else { return nil }
                    if s[i] == "," { i += 1; continue }
                    if s[i] == "}" { i += 1; return .object(keys: keys, values: values) }
                    return nil
                }
            case "[":
                i += 1; depth += 1
                defer { depth -= 1 }
                var items: [JSONValue] = []
                skipSpace()
                if i < s.count, s[i] == "]" { i += 1; return .array(items) }
                while true {
                    guard let v = value() else { return nil }
                    items.append(v)
                    skipSpace()
                    guard i < s.count else { return nil }
                    if s[i] == "," { i += 1; continue }
                    if s[i] == "]" { i += 1; return .array(items) }
                    return nil
                }
            default:
                // A number or true/false/null: up to the next delimiter, read as JSON.
                let start = i
                while i < s.count, !",}] \n\t\r".unicodeScalars.contains(s[i]) { i += 1 }
                var token = String.UnicodeScalarView()
                token.append(contentsOf: s[start..<i])
                guard let v = try? JSONValue.parse(Array(String(token).utf8)) else { return nil }
                switch v {
                case .number, .bool, .null: return v
                default: return nil
                }
            }
        }

        mutating func key() -> String? {
            if i < s.count, s[i] == "\"" { return jsonString() }
            if startsQuote(i), case let .string(k)? = value() { return k }
            let start = i
            while i < s.count, s[i] == "_" || s[i] == "-" || s[i] == "." || s[i].properties.isAlphabetic
                || ("0"..."9").contains(s[i]) { i += 1 }
            guard i > start else { return nil }
            var k = String.UnicodeScalarView()
            k.append(contentsOf: s[start..<i])
            return String(k)
        }

        /// A JSON string literal at `i` (escapes decoded by the JSON parser).
        mutating func jsonString() -> String? {
            let start = i
            i += 1
            while i < s.count, s[i] != "\"" { if s[i] == "\\" { i += 1 }; i += 1 }
            guard i < s.count else { return nil }
            i += 1
            var lit = String.UnicodeScalarView()
            lit.append(contentsOf: s[start..<i])
            return (try? JSONValue.parse(Array(String(lit).utf8)))?.string
        }
    }
}
