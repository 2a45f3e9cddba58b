// Tool calls and reasoning through the request logic (scripted model, real scheduler and
// vocabulary-shard masks): forced calls give valid arguments whatever the model says (Gemma
// 1-3 and Gemma 4 formats), `auto` output is parsed (malformed calls come back as content),
// Gemma 4's thought channel is `reasoning_content`, structural markers are never text, and
// streamed answers equal the non-streamed ones.
import Foundation
import Testing
@testable import GemmaServer
import GemmaEngine
import GemmaTokenizer
import GemmaTestSupport

/// A Gemma 4 style vocabulary: control ids, the tool/thinking markers as USER_DEFINED pieces
/// (as Gemma 4 GGUFs store them), the 256 byte tokens and "▁", so any text encodes.
func gemma4TestTokenizer() throws -> GemmaTokenizer {
    var pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>"]
    var types: [TokenType] = [.control, .control, .control, .unknown, .control, .control, .control]
    for m in ["<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", "<|\"|>", "<|think|>",
              "<|tool>", "<tool|>", "<start_of_image>"] {
        pieces.append(m); types.append(m == "<|think|>" ? .control : .userDefined)
    }
    for b in 0..<256 { pieces.append(String(format: "<0x%02X>", b)); types.append(.byte) }
    pieces += ["▁", "thought", "call", "Paris"]
    types += [.normal, .normal, .normal, .normal]
    return try GemmaTokenizer(pieces: pieces, scores: [Float](repeating: 0, count: pieces.count), types: types,
                              bosID: 2, eosID: 1, unknownID: 3, addBOS: false, addEOS: false, source: "gemma4-test")
}

let weatherTool = #"{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}, "days": {"type": "integer"}}, "required": ["city", "unit"], "additionalProperties": false}}}"#
let timeTool = #"{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}"#

/// A chat answer's message, streamed or not: (content, reasoning, calls, finish reason). The
/// streamed one is accumulated from the deltas as OpenAI's client does.
func chatAnswer(_ h: ServiceHarness, _ json: String, stream: Bool) async throws
    -> (content: String?, reasoning: String?, calls: [[String: Any]], finish: String?) {
    if !stream {
        let object = try await h.run(.chat, json)
        let c = choice(object)
        let m = try #require(c["message"] as? [String: Any])
        return (m["content"] as? String, m["reasoning_content"] as? String, (m["tool_calls"] as? [[String: Any]]) ?? [], c["finish_reason"] as? String)
    }
    let body = String(json.dropLast()) + #", "stream": true}"#
    let (prepared, backend) = try h.service.prepare(.chat, body: Data(body.utf8))
    var events: [String] = []
    try await h.service.streamEvents(try h.service.start(prepared, backend: backend)) { events.append($0) }
    #expect(events.last == "data: [DONE]\n\n")
    var content: String?, reasoning: String?, finish: String?
    var calls: [Int: [String: Any]] = [:]
    for e in events.dropLast() {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(e.dropFirst(6).utf8)) as? [String: Any])
        guard let c = (object["choices"] as? [[String: Any]])?.first else { continue }
        let d = c["delta"] as? [String: Any] ?? [:]
        if let s = d["content"] as? String, !s.isEmpty || content != nil { content = (content ?? "") + s }
        if let s = d["reasoning_content"] as? String { reasoning = (reasoning ?? "") + s }
        for t in d["tool_calls"] as? [[String: Any]] ?? [] {
            let i = try #require(t["index"] as? Int)
            var entry = calls[i] ?? [:]
            for k in ["id", "type"] { if let v = t[k] { entry[k] = v } }
            var f = entry["function"] as? [String: Any] ?? [:]
            let df = t["function"] as? [String: Any] ?? [:]
            if let n = df["name"] { f["name"] = n }
            f["arguments"] = ((f["arguments"] as? String) ?? "") + ((df["arguments"] as? String) ?? "")
            entry["function"] = f
            calls[i] = entry
        }
        if let f = c["finish_reason"] as? String { finish = f }
    }
    return (content, reasoning, calls.keys.sorted().map { calls[$0]! }, finish)
}

/// A harness whose greedy answer to `body` is exactly `reply` (the scripted model answers
/// `script[position % count]`, so the script is rotated by the prompt's length).
func replying(_ reply: [Int32], to body: String, tokenizer: GemmaTokenizer? = nil, format: ChatFormat = .gemma) throws -> ServiceHarness {
    let probe = try ServiceHarness(reply: "", maxContext: 2048, tokenizer: tokenizer, script: [0], format: format)
    let promptLength = try probe.service.prepare(.chat, body: Data(body.utf8)).0.generation.promptTokens.count
    probe.stop()
    let n = reply.count
    let script = (0..<n).map { reply[(($0 - promptLength) % n + n) % n] }
    return try ServiceHarness(reply: "", maxContext: 2048, tokenizer: tokenizer, script: script, format: format)
}

/// A call's name and parsed arguments.
func callParts(_ call: [String: Any]) throws -> (String, [String: Any]) {
    #expect(call["type"] as? String == "function")
    #expect((call["id"] as? String)?.hasPrefix("call_") == true)
    let f = try #require(call["function"] as? [String: Any])
    let args = try #require(f["arguments"] as? String)
    let value = try #require(try JSONSerialization.jsonObject(with: Data(args.utf8)) as? [String: Any], "\(args)")
    return (try #require(f["name"] as? String), value)
}

/// The weather tool's schema, checked by hand: city a string, unit C or F, days an integer if
/// present, nothing else.
func validWeather(_ a: [String: Any]) -> Bool {
    guard a["city"] is String, let u = a["unit"] as? String, ["C", "F"].contains(u) else { return false }
    if let d = a["days"], !(d is Int) { return false }
    return Set(a.keys).isSubset(of: ["city", "unit", "days"])
}

@Suite struct ToolServiceTests {
    let user = #""messages": [{"role": "user", "content": "What is the weather in Paris?"}]"#

    /// Forced calls (named and required) over a model that says something else entirely: the
    /// masks make every answer a valid call, at several temperatures and seeds, streamed and not.
    @Test(arguments: [ChatFormat.gemma, .gemma4])
    func forcedCallsAreValid(format: ChatFormat) async throws {
        let tok: GemmaTokenizer? = format == .gemma4 ? try gemma4TestTokenizer() : nil
        let h = try ServiceHarness(reply: "the cat sat on the mat ", maxContext: 1024, tokenizer: tok, format: format)
        defer { h.stop() }
        for (temperature, seed) in [(0.0, 1), (0.8, 2), (1.5, 3)] {
            for stream in [false, true] {
                let named = try await chatAnswer(h, #"{\#(user), "max_tokens": 80, "temperature": \#(temperature), "seed": \#(seed), "tools": [\#(weatherTool), \#(timeTool)], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}"#, stream: stream)
                #expect(named.finish == "tool_calls" && named.calls.count == 1 && named.content == nil, "\(named)")
                let (name, args) = try callParts(try #require(named.calls.first))
                #expect(name == "get_weather" && validWeather(args), "\(args)")
                let required = try await chatAnswer(h, #"{\#(user), "max_tokens": 80, "temperature": \#(temperature), "seed": \#(seed), "tools": [\#(weatherTool), \#(timeTool)], "tool_choice": "required"}"#, stream: stream)
                #expect(required.finish == "tool_calls" && required.calls.count == 1)
                let (rname, rargs) = try callParts(try #require(required.calls.first))
                #expect(rname == "get_weather" ? validWeather(rargs) : rname == "get_time" && rargs["zone"] is String, "\(rname) \(rargs)")
            }
        }
        // Refusals: an unsupported keyword names it; too few tokens; stop strings; a name not in tools.
        let pattern = #"{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}}}"#
        let bad = h.apiError(.chat, #"{\#(user), "tools": [\#(pattern)], "tool_choice": "required"}"#)
        #expect(bad?.param == "tools" && bad?.message.contains("\"pattern\"") == true, "\(String(describing: bad))")
        #expect(h.apiError(.chat, #"{\#(user), "tools": [\#(pattern)]}"#) == nil)  // auto: the schema only checks parsed calls
        #expect(h.apiError(.chat, #"{\#(user), "max_tokens": 3, "tools": [\#(weatherTool)], "tool_choice": "required"}"#)?.param == "max_tokens")
        #expect(h.apiError(.chat, #"{\#(user), "stop": "x", "tools": [\#(weatherTool)], "tool_choice": "required"}"#)?.param == "stop")
        #expect(h.apiError(.chat, #"{\#(user), "tools": [\#(weatherTool)], "tool_choice": {"type": "function", "function": {"name": "nope"}}}"#)?.param == "tool_choice")
        #expect(h.apiError(.chat, #"{\#(user), "tool_choice": "required"}"#)?.param == "tool_choice")
        #expect(h.apiError(.chat, #"{\#(user), "tools": [{"type": "function"}]}"#)?.param == "tools")
        #expect(h.apiError(.completion, #"{"prompt": "x", "tools": [\#(weatherTool)]}"#)?.param == "tools")
        #expect(h.apiError(.chat, #"{\#(user), "tools": [\#(weatherTool)], "tool_choice": "required", "response_format": {"type": "json_object"}}"#)?.param == "response_format")
    }

    /// Gemma 1-3 `auto`: a well-formed call block is a call; a malformed or invalid one, and
    /// any output with tool_choice none, is content; streamed equals non-streamed.
    @Test func gemma3AutoParsesCalls() async throws {
        let good = "Sure.\n```tool_call\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"C\"}}\n```"
        let cases: [(String, Bool)] = [
            (good, true),
            ("```tool_call\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```", false),  // required unit missing
            ("```tool_call\n{\"name\": \"nope\", \"arguments\": {}}\n```", false),
            ("```tool_call\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa", false),
            ("no call here", false),
        ]
        let tok = try GemmaTokenizer.load(path: ServiceHarness.tokenizerPath)
        for (reply, isCall) in cases {
            let ids = tok.encode(reply, addSpecial: false) + [tok.eosID!]
            let body = #"{\#(user), "max_tokens": 200, "temperature": 0, "tools": [\#(weatherTool)]}"#
            let noneBody = #"{\#(user), "max_tokens": 200, "temperature": 0, "tools": [\#(weatherTool)], "tool_choice": "none"}"#
            let h = try replying(ids, to: body), hn = try replying(ids, to: noneBody)
            defer { h.stop(); hn.stop() }
            for stream in [false, true] {
                let a = try await chatAnswer(h, body, stream: stream)
                if isCall {
                    #expect(a.finish == "tool_calls" && a.calls.count == 1 && a.content == "Sure.\n", "\(a)")
                    let (name, args) = try callParts(a.calls[0])
                    #expect(name == "get_weather" && args["city"] as? String == "Paris" && args["unit"] as? String == "C")
                } else {
                    #expect(a.finish == "stop" && a.calls.isEmpty && a.content == reply, "\(reply) \(stream): \(a)")
                }
                let none = try await chatAnswer(hn, noneBody, stream: stream)
                #expect(none.calls.isEmpty && none.content == reply && none.finish == "stop")
            }
        }
    }

    /// A follow-up request carrying the assistant's call and the tool's result is accepted
    /// and rendered (the prompt holds the call block and the result block).
    @Test func toolResultsAreAccepted() async throws {
        let messages = #""messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"C\"}"}}]}, {"role": "tool", "tool_call_id": "call_9", "content": "{\"temp\": 21}"}]"#
        let body = #"{\#(messages), "max_tokens": 20, "temperature": 0, "tools": [\#(weatherTool)]}"#
        let tok = try GemmaTokenizer.load(path: ServiceHarness.tokenizerPath)
        let h = try replying(tok.encode("It is sunny.", addSpecial: false) + [tok.eosID!], to: body)
        defer { h.stop() }
        let (prepared, _) = try h.service.prepare(.chat, body: Data(body.utf8))
        let prompt = h.tokenizer.decode(prepared.generation.promptTokens)
        #expect(prompt.contains("```tool_call\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\",\"unit\":\"C\"}}\n```"), "\(prompt)")
        #expect(prompt.contains("```tool_response\n{\"name\":\"get_weather\",\"content\":{\"temp\":21}}\n```"))
        let a = try await chatAnswer(h, body, stream: false)
        #expect(a.content == "It is sunny." && a.finish == "stop")
        let unknown = #""messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "1"}]"#
        #expect(h.apiError(.chat, #"{\#(unknown)}"#)?.param == "messages")
        let badArgs = #""messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]"#
        #expect(h.apiError(.chat, #"{\#(badArgs)}"#)?.param == "messages")
    }

    /// Gemma 4: the thought channel is reasoning_content, a native call is parsed (the turn
    /// ends at <|tool_response>), a malformed one is content, and no marker is ever text.
    @Test func gemma4ReasoningCallsAndMarkers() async throws {
        let tok = try gemma4TestTokenizer()
        let q = Gemma4ToolFormat.quote
        func ids(_ s: String) -> [Int32] { tok.encode(s, addSpecial: false, parseSpecial: true) }
        let thinking = ids("<|channel>thought\nLet me see.<channel|>Hello<|\"|> world<tool_call|>!") + [tok.id(of: "<turn|>")!]
        let thinkBody = #"{\#(user), "max_tokens": 200, "temperature": 0, "reasoning_effort": "high"}"#
        let h = try replying(thinking, to: thinkBody, tokenizer: tok, format: .gemma4)
        defer { h.stop() }
        for stream in [false, true] {
            let a = try await chatAnswer(h, thinkBody, stream: stream)
            #expect(a.reasoning == "Let me see." && a.content == "Hello world!" && a.finish == "stop", "\(a)")
        }
        // Thinking on puts <|think|> in the system turn; off (default, or "none") the empty channel.
        let on = try h.service.prepare(.chat, body: Data(#"{\#(user), "chat_template_kwargs": {"enable_thinking": true}}"#.utf8)).0
        #expect(tok.decode(on.generation.promptTokens, renderSpecial: true).hasPrefix("<bos><|turn>system\n<|think|>\n"))
        let off = try h.service.prepare(.chat, body: Data(#"{\#(user), "reasoning_effort": "none"}"#.utf8)).0
        #expect(tok.decode(off.generation.promptTokens, renderSpecial: true).hasSuffix("<|turn>model\n<|channel>thought\n<channel|>"))

        let call = ids("<|tool_call>call:get_weather{city:\(q)Paris\(q),unit:\(q)F\(q)}<tool_call|><|tool_response>")
        let toolBody = #"{\#(user), "max_tokens": 200, "temperature": 0, "tools": [\#(weatherTool)]}"#
        let hc = try replying(call, to: toolBody, tokenizer: tok, format: .gemma4)
        defer { hc.stop() }
        for stream in [false, true] {
            let a = try await chatAnswer(hc, toolBody, stream: stream)
            #expect(a.finish == "tool_calls" && a.calls.count == 1 && a.content == nil, "\(a)")
            let (name, args) = try callParts(a.calls[0])
            #expect(name == "get_weather" && args["city"] as? String == "Paris" && args["unit"] as? String == "F")
        }
        let broken = ids("<|tool_call>call:get_weather{city:\(q)Paris}<tool_call|>") + [tok.id(of: "<turn|>")!]
        let hb = try replying(broken, to: toolBody, tokenizer: tok, format: .gemma4)
        defer { hb.stop() }
        for stream in [false, true] {
            let a = try await chatAnswer(hb, toolBody, stream: stream)
            #expect(a.calls.isEmpty && a.finish == "stop" && a.content == "call:get_weather{city:\"Paris}", "\(a)")
            #expect(!(a.content ?? "").contains("<|"))
        }
    }

    /// The splitter gives the same pieces whether text comes whole or a character at a time.
    @Test func splitterIsChunkingIndependent() throws {
        let tools = [ToolDefinition(name: "f", parameters: nil)]
        let texts: [(ChatFormat, String)] = [
            (.gemma4, "<|channel>thought\nab<|\"|>c<channel|>x<|tool_call>call:f{a:<|\"|>1<|\"|>}<tool_call|>"),
            (.gemma4, "<|chan"), (.gemma4, "a<|channel>thought"), (.gemma, "a``b```tool_call\n{\"name\": \"f\", \"arguments\": {}}\n```c"),
            (.gemma, "```tool_cal"),
        ]
        for (format, text) in texts {
            func run(_ chunks: [String]) -> ([AnswerPiece], [ToolCall]) {
                var s = AssistantOutputSplitter(format: format, tools: tools, choice: .auto)
                var pieces = chunks.flatMap { s.push($0) }
                let (rest, calls) = s.finish(callId: { "call_\($0)" })
                pieces += rest
                // Merge neighbours of one kind, as a client does.
                var merged: [AnswerPiece] = []
                for p in pieces {
                    switch (merged.last, p) {
                    case let (.content(a)?, .content(b)): merged[merged.count - 1] = .content(a + b)
                    case let (.reasoning(a)?, .reasoning(b)): merged[merged.count - 1] = .reasoning(a + b)
                    case let (.callArguments(a)?, .callArguments(b)): merged[merged.count - 1] = .callArguments(a + b)
                    default: merged.append(p)
                    }
                }
                return (merged.filter { $0 != .content("") }, calls)
            }
            let whole = run([text]), bits = run(text.map { String($0) })
            #expect(whole.0 == bits.0 && whole.1 == bits.1, "\(text)")
        }
        // Forced calls stream the function first, then the arguments as generated (Gemma 1-3's
        // closing "}" held back; a name that is a prefix of another is not taken early).
        let two = [ToolDefinition(name: "get", parameters: nil), ToolDefinition(name: "get_weather", parameters: nil)]
        for (format, text, name, args) in [(ChatFormat.gemma, #"{"name": "get_weather", "arguments":  {"a": [1, "}"]}}"#, "get_weather", #"{"a": [1, "}"]}"#),
                                           (.gemma4, #"call:get_weather {"a":"x"}"#, "get_weather", #"{"a":"x"}"#),
                                           (.gemma4, #"call:get{}"#, "get", "{}")] {
            for chunks in [[text], text.map { String($0) }] {
                var f = AssistantOutputSplitter(format: format, tools: two, choice: .forced(["get", "get_weather"]))
                var pieces = chunks.flatMap { f.push($0) }
                let (rest, calls) = f.finish(callId: { "call_\($0)" })
                pieces += rest
                #expect(pieces.first == .callStart(name), "\(text)")
                #expect(pieces.dropFirst().map { if case let .callArguments(a) = $0 { return a } else { return "?" } }.joined() == args, "\(pieces)")
                #expect(calls.count == 1 && calls[0].name == name && calls[0].text == args)
            }
        }
        var s = AssistantOutputSplitter(format: .gemma4, tools: tools, choice: .auto)
        var pieces = s.push("<|channel>thought\nab<|\"|>c<channel|>x<|tool_call>call:f{a:<|\"|>1<|\"|>}<tool_call|>")
        let (rest, calls) = s.finish(callId: { "call_\($0)" })
        pieces += rest
        #expect(pieces == [.reasoning("ab"), .reasoning("c"), .content("x")] && calls.map(\.name) == ["f"])
        #expect(String(decoding: JSONValue.serialize(calls[0].arguments), as: UTF8.self) == #"{"a":"1"}"#)
        var t = AssistantOutputSplitter(format: .gemma4, tools: tools, choice: .auto)
        #expect(t.push("<|chan") == [] && t.finish(callId: { "\($0)" }).0 == [.content("<|chan")])
    }
}
