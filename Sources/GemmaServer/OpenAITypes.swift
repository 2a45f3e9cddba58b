// The JSON shapes of OpenAI's /v1/chat/completions, /v1/completions and /v1/models, as far as
// this server supports them. Requests decode leniently where OpenAI does (a string or an array
// for `prompt`, `stop` and message `content`); responses encode with OpenAI's field names.
import Foundation
import GemmaTokenizer

/// A string or a list of strings (OpenAI's `stop`, and `prompt` for one prompt).
public enum StringOrList: Decodable, Sendable, Equatable {
    case one(String)
    case many([String])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .one(s); return }
        self = .many(try c.decode([String].self))
    }

    public var list: [String] {
        switch self {
        case let .one(s): return [s]
        case let .many(l): return l
        }
    }
}

/// Message content: plain text or a list of parts of which only `text` parts are supported.
public struct MessageContent: Decodable, Sendable, Equatable {
    public var text: String

    struct Part: Decodable {
        let type: String
        let text: String?
    }

    public init(text: String) { self.text = text }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { text = ""; return }
        if let s = try? c.decode(String.self) { text = s; return }
        let parts = try c.decode([Part].self)
        var out = ""
        for p in parts {
            guard p.type == "text", let t = p.text else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "only text content parts are supported, got \"\(p.type)\"")
            }
            out += t
        }
        text = out
    }
}

public struct ChatMessageIn: Decodable, Sendable {
    public var role: String
    public var content: MessageContent?
    /// Assistant messages: calls made (rendered in the model's tool format).
    public var tool_calls: [ToolCallIn]?
    /// Tool messages: the call answered.
    public var tool_call_id: String?
    public var name: String?
}

/// An earlier assistant message's call: `{"id", "type": "function", "function": {"name", "arguments"}}`
/// (`arguments` a JSON string, as OpenAI sends it).
public struct ToolCallIn: Decodable, Sendable {
    public struct Function: Decodable, Sendable {
        public var name: String
        public var arguments: String?
    }
    public var id: String?
    public var type: String?
    public var function: Function
}

public struct StreamOptions: Decodable, Sendable {
    public var include_usage: Bool?
}

/// The fields both endpoints share (sampling, limits, streaming).
public struct CommonParameters: Decodable, Sendable {
    public var model: String?
    public var max_tokens: Int?
    public var max_completion_tokens: Int?
    public var temperature: Double?
    public var top_p: Double?
    public var top_k: Int?
    public var min_p: Double?
    public var seed: Int64?
    public var stop: StringOrList?
    public var stream: Bool?
    public var stream_options: StreamOptions?
    public var n: Int?
    /// Chat: a boolean; completions: the number of alternatives (OpenAI's legacy API).
    public var logprobs: LogprobsField?
    /// Chat only: alternatives per token, 0...20 (needs `logprobs: true`).
    public var top_logprobs: Int?
    /// `text`, `json_object` or `json_schema` (structured output: `OpenAIService.grammarRequest`).
    public var response_format: ResponseFormat?
    /// Chat only; read from the body with schemas in order (`ToolRequest.parse`).
    public var tools: [AnyJSON]?
    public var tool_choice: AnyJSON?
}

/// `response_format`: its `type`; the schema is read from the body with members in order.
public struct ResponseFormat: Decodable, Sendable {
    public var type: String
}

/// Any JSON value, skipped (for fields that are only checked for presence).
public struct AnyJSON: Decodable, Sendable {
    /// The value when it is a string.
    public var string: String?

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int?
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { self.stringValue = "\(intValue)"; self.intValue = intValue }
    }

    public init(from decoder: any Decoder) throws {
        if let c = try? decoder.singleValueContainer() {
            if c.decodeNil() { return }
            if let s = try? c.decode(String.self) { string = s; return }
            if (try? c.decode(Bool.self)) != nil || (try? c.decode(Double.self)) != nil { return }
        }
        if var a = try? decoder.unkeyedContainer() {
            while !a.isAtEnd { _ = try a.decode(AnyJSON.self) }
            return
        }
        let o = try decoder.container(keyedBy: Key.self)
        for k in o.allKeys { _ = try o.decode(AnyJSON.self, forKey: k) }
    }
}

public struct ChatCompletionRequest: Decodable, Sendable {
    public var messages: [ChatMessageIn]
    public var common: CommonParameters

    enum Keys: String, CodingKey { case messages }

    public init(from decoder: any Decoder) throws {
        messages = try decoder.container(keyedBy: Keys.self).decode([ChatMessageIn].self, forKey: .messages)
        common = try CommonParameters(from: decoder)
    }
}

public struct CompletionRequest: Decodable, Sendable {
    public var prompt: StringOrList
    public var common: CommonParameters

    enum Keys: String, CodingKey { case prompt }

    public init(from decoder: any Decoder) throws {
        prompt = try decoder.container(keyedBy: Keys.self).decode(StringOrList.self, forKey: .prompt)
        common = try CommonParameters(from: decoder)
    }
}

// MARK: - Responses

public struct Usage: Encodable, Sendable, Equatable {
    public var prompt_tokens: Int
    public var completion_tokens: Int
    public var total_tokens: Int
    /// `cached_tokens`: prompt tokens whose KV entries were reused (prefix caching).
    public var prompt_tokens_details: PromptTokensDetails? = nil
}

public struct PromptTokensDetails: Encodable, Sendable, Equatable {
    public var cached_tokens: Int
}

public struct ChatMessageOut: Encodable, Sendable {
    public var role: String
    /// Null when the answer is only tool calls.
    @ExplicitNull public var content: String?
    /// Gemma 4's thought channel (left out when there is none).
    public var reasoning_content: String?
    public var tool_calls: [ToolCallOut]?
}

/// A call in a response: `function.arguments` is a JSON string, as OpenAI sends it.
public struct ToolCallOut: Encodable, Sendable {
    public struct Function: Encodable, Sendable {
        public var name: String
        public var arguments: String
    }
    public var id: String
    public var type = "function"
    public var function: Function

    init(_ c: ToolCall) {
        id = c.id
        function = Function(name: c.name, arguments: c.text ?? String(decoding: JSONValue.serialize(c.arguments), as: UTF8.self))
    }
}

/// A streamed call: the whole call in one delta (index, id, type, name and arguments), or,
/// for a forced call, a first delta with index, id, type, name and empty arguments, then
/// deltas with index and an arguments fragment (as OpenAI streams them).
public struct ToolCallDelta: Encodable, Sendable {
    public struct Function: Encodable, Sendable {
        public var name: String?
        public var arguments: String
    }
    public var index: Int
    public var id: String?
    public var type: String?
    public var function: Function

    init(index: Int, _ c: ToolCall) {
        self.index = index
        id = c.id
        type = "function"
        let f = ToolCallOut(c).function
        function = Function(name: f.name, arguments: f.arguments)
    }

    init(index: Int, id: String?, name: String?, arguments: String) {
        self.index = index
        self.id = id
        type = id == nil ? nil : "function"
        function = Function(name: name, arguments: arguments)
    }
}

public struct ChatChoice: Encodable, Sendable {
    public var index: Int
    public var message: ChatMessageOut
    /// Null unless the request asked for `logprobs`.
    @ExplicitNull public var logprobs: ChatLogprobs?
    public var finish_reason: String
}

public struct ChatCompletionResponse: Encodable, Sendable {
    public var id: String
    public var object = "chat.completion"
    public var created: Int
    public var model: String
    public var choices: [ChatChoice]
    public var usage: Usage
}

public struct ChatDelta: Encodable, Sendable {
    public var role: String?
    public var content: String?
    public var reasoning_content: String?
    public var tool_calls: [ToolCallDelta]?
}

/// An optional field that encodes as JSON `null` when absent instead of being left out, as
/// OpenAI sends it.
@propertyWrapper
public struct ExplicitNull<Value: Encodable & Sendable>: Encodable, Sendable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let wrappedValue { try c.encode(wrappedValue) } else { try c.encodeNil() }
    }
}

public struct ChatChunkChoice: Encodable, Sendable {
    public var index: Int
    public var delta: ChatDelta
    /// The log-probabilities of the tokens whose text this chunk carries (null when not asked).
    @ExplicitNull public var logprobs: ChatLogprobs? = nil
    /// Null until the last chunk.
    @ExplicitNull public var finish_reason: String?
}

public struct ChatCompletionChunk: Encodable, Sendable {
    public var id: String
    public var object = "chat.completion.chunk"
    public var created: Int
    public var model: String
    public var choices: [ChatChunkChoice]
    public var usage: Usage?
}

public struct TextChoice: Encodable, Sendable {
    public var index: Int
    public var text: String
    /// Null unless the request asked for `logprobs`.
    @ExplicitNull public var logprobs: LegacyLogprobs? = nil
    @ExplicitNull public var finish_reason: String?
}

public struct CompletionResponse: Encodable, Sendable {
    public var id: String
    public var object = "text_completion"
    public var created: Int
    public var model: String
    public var choices: [TextChoice]
    public var usage: Usage?
}

public struct ModelEntry: Encodable, Sendable {
    public var id: String
    public var object = "model"
    public var created: Int
    public var owned_by = "gemma-node"
}

public struct ModelList: Encodable, Sendable {
    public var object = "list"
    public var data: [ModelEntry]
}

// MARK: - Log-probabilities

/// `logprobs`: a boolean on chat completions, a count (0...20) on text completions.
public enum LogprobsField: Decodable, Sendable, Equatable {
    case flag(Bool)
    case count(Int)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .flag(b); return }
        self = .count(try c.decode(Int.self))
    }
}

/// A log-probability as JSON can carry it: -inf (an impossible token) becomes -9999, the value
/// OpenAI reports for tokens far outside the top.
func jsonLogprob(_ x: Double) -> Double { x.isFinite ? x : -9999 }

/// One alternative of a chat token (`top_logprobs[]`).
public struct ChatTopLogprob: Encodable, Sendable {
    public var token: String
    public var logprob: Double
    public var bytes: [UInt8]
}

/// One generated token of a chat answer (`logprobs.content[]`).
public struct ChatTokenLogprob: Encodable, Sendable {
    public var token: String
    public var logprob: Double
    public var bytes: [UInt8]
    public var top_logprobs: [ChatTopLogprob]
}

/// A chat choice's `logprobs`.
public struct ChatLogprobs: Encodable, Sendable {
    public var content: [ChatTokenLogprob]
    @ExplicitNull public var refusal: [ChatTokenLogprob]? = nil
}

/// Token → logprob, in best-first order (JSON objects keep insertion order here).
public struct OrderedLogprobs: Encodable, Sendable {
    public var entries: [(String, Double)]

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for (k, v) in entries { try c.encode(v, forKey: Key(stringValue: k)) }
    }
}

/// A text completion choice's `logprobs` (OpenAI's legacy shape).
public struct LegacyLogprobs: Encodable, Sendable {
    public var tokens: [String] = []
    public var token_logprobs: [Double] = []
    public var top_logprobs: [OrderedLogprobs] = []
    /// Offset of each token's text in the choice's text, in Unicode scalars.
    public var text_offset: [Int] = []
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
public struct APIErrorBody: Encodable, Sendable {
    public struct Inner: Encodable, Sendable {
        public var message: String
        public var type: String
        public var param: String?
        public var code: String?

        enum CodingKeys: String, CodingKey { case message, type, param, code }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(message, forKey: .message)
            try c.encode(type, forKey: .type)
            try c.encode(param, forKey: .param)
            try c.encode(code, forKey: .code)
        }
    }
    public var error: Inner
}
