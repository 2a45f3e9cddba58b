// Tool declarations, calls, results and thinking rendered by both chat formats (docs/SERVER.md
// "Tool calls and reasoning"; Gemma 4's native format GEMMA_SPEC §A4.4), and calls read back.
import Foundation
import Testing
import GemmaTokenizer

@Suite struct ToolTemplateTests {
    let weather = ToolDefinition(name: "get_weather", description: "Weather of a city",
                                 parameters: try! JSONValue.parse(Array(#"{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}"#.utf8)))
    let call = ToolCall(id: "call_1", name: "get_weather", arguments: .object(keys: ["city", "days"], values: [.string("Paris"), .number(2)]))

    var conversation: [ChatMessage] {
        [ChatMessage(role: "system", content: "Be brief."),
         ChatMessage(role: "user", content: "Weather in Paris?"),
         ChatMessage(role: "assistant", content: "", toolCalls: [call]),
         ChatMessage(role: "tool", content: #"{"temp": 21}"#, toolCallId: "call_1"),
         ChatMessage(role: "tool", content: "sunny", name: "get_weather")]
    }

    @Test func gemma3ToolsCallsAndResults() throws {
        let s = try ChatTemplate(format: .gemma).render(messages: conversation, tools: [weather], addGenerationPrompt: true)
        let tools = GemmaToolFormat.declarations([weather])
        #expect(tools.contains(#"{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}}"#))
        let expected = "<bos><start_of_turn>user\nBe brief.\n\n" + tools + "\n\nWeather in Paris?<end_of_turn>\n"
            + "<start_of_turn>model\n```tool_call\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\",\"days\":2}}\n```<end_of_turn>\n"
            + "<start_of_turn>user\n```tool_response\n{\"name\":\"get_weather\",\"content\":{\"temp\":21}}\n```\n"
            + "```tool_response\n{\"name\":\"get_weather\",\"content\":\"sunny\"}\n```<end_of_turn>\n"
            + "<start_of_turn>model\n"
        #expect(s == expected)
        // A forced call opens the block in the prompt.
        let forced = try ChatTemplate(format: .gemma).render(messages: [ChatMessage(role: "user", content: "x")], tools: [weather],
                                                             addGenerationPrompt: true, openToolCall: true)
        #expect(forced.hasSuffix("<start_of_turn>model\n```tool_call\n"))
        // The call block parses back to the call.
        let body = GemmaToolFormat.call(call).dropFirst(GemmaToolFormat.callOpening.count).dropLast(3)
        let parsed = try #require(GemmaToolFormat.parseCall(String(body)))
        #expect(parsed.name == "get_weather" && JSONValue.serialize(parsed.arguments) == JSONValue.serialize(call.arguments))
        #expect(GemmaToolFormat.parseCall(#"{"name": "f", "arguments": "{\"a\": 1}"}"#)?.name == "f")  // arguments as a string
        for bad in [#"{"name": "f", "arguments": [1]}"#, #"{"arguments": {}}"#, #"{"name": "f", "arguments": {"#, "call me"] {
            #expect(GemmaToolFormat.parseCall(bad) == nil, "\(bad)")
        }
        // A tool result naming no earlier call is refused.
        #expect(throws: ChatTemplateError.self) {
            try ChatTemplate(format: .gemma).render(messages: [ChatMessage(role: "user", content: "x"), ChatMessage(role: "assistant", content: "y"),
                                                               ChatMessage(role: "tool", content: "z", toolCallId: "nope")], addGenerationPrompt: true)
        }
    }

    @Test func gemma4ToolsCallsResultsAndThinking() throws {
        var t = ChatTemplate(format: .gemma4)
        let q = Gemma4ToolFormat.quote
        let declaration = "<|tool>declaration:get_weather{description:\(q)Weather of a city\(q),parameters:{properties:{city:{type:\(q)string\(q)},"
            + "days:{type:\(q)integer\(q)}},required:[\(q)city\(q)],type:\(q)object\(q)}}<tool|>"
        let s = try t.render(messages: conversation, tools: [weather], addGenerationPrompt: true)
        let expected = "<bos><|turn>system\nBe brief." + declaration + "<turn|>\n<|turn>user\nWeather in Paris?<turn|>\n"
            + "<|turn>model\n<|tool_call>call:get_weather{city:\(q)Paris\(q),days:2}<tool_call|>"
            + "<|tool_response>response:get_weather{temp:21}<tool_response|>"
            + "<|tool_response>response:get_weather{value:\(q)sunny\(q)}<tool_response|>"
        #expect(s == expected)  // the generation continues the open model turn
        // The model's answer after the results continues that turn; a user message closes it;
        // earlier thoughts are dropped; thinking on puts <|think|> first in the system turn.
        t.enableThinking = true
        let next = conversation + [ChatMessage(role: "assistant", content: "<|channel>thought\nhmm<channel|>It is sunny."),
                                   ChatMessage(role: "user", content: "Thanks")]
        let s2 = try t.render(messages: next, tools: [weather], addGenerationPrompt: true)
        #expect(s2 == "<bos><|turn>system\n<|think|>\nBe brief." + declaration + "<turn|>\n<|turn>user\nWeather in Paris?<turn|>\n"
            + "<|turn>model\n<|tool_call>call:get_weather{city:\(q)Paris\(q),days:2}<tool_call|>"
            + "<|tool_response>response:get_weather{temp:21}<tool_response|>"
            + "<|tool_response>response:get_weather{value:\(q)sunny\(q)}<tool_response|>It is sunny.<turn|>\n"
            + "<|turn>user\nThanks<turn|>\n<|turn>model\n")
        // Thinking off: the empty thought channel; a forced call opens <|tool_call> after it.
        t.enableThinking = false
        let forced = try t.render(messages: [ChatMessage(role: "user", content: "x")], tools: [weather], addGenerationPrompt: true, openToolCall: true)
        #expect(forced.hasSuffix("<turn|>\n<|turn>model\n<|channel>thought\n<channel|><|tool_call>"))
    }

    @Test func gemma4CallsParseNativeAndJSON() throws {
        let q = Gemma4ToolFormat.quote
        let native = try #require(Gemma4ToolFormat.parseCall("call:get_weather{city:\(q)Paris, \"FR\"\(q),days:2,tags:[\(q)a\(q),true,null],o:{x:-1.5}}"))
        #expect(native.name == "get_weather")
        #expect(String(decoding: JSONValue.serialize(native.arguments), as: UTF8.self)
                == #"{"city":"Paris, \"FR\"","days":2,"tags":["a",true,null],"o":{"x":-1.5}}"#)
        let json = try #require(Gemma4ToolFormat.parseCall(#"call:f {"a": "b\n", "c": [1, 2]}"#))
        #expect(json.name == "f" && String(decoding: JSONValue.serialize(json.arguments), as: UTF8.self) == #"{"a":"b\n","c":[1,2]}"#)
        // Round trip through the writer.
        let written = Gemma4ToolFormat.call(ToolCall(id: "x", name: "f", arguments: native.arguments))
        let back = try #require(Gemma4ToolFormat.parseCall(String(written.dropFirst("<|tool_call>".count).dropLast("<tool_call|>".count))))
        #expect(JSONValue.serialize(back.arguments) == JSONValue.serialize(.object(keys: ["city", "days", "o", "tags"], values: [
            native.arguments["city"]!, native.arguments["days"]!, native.arguments["o"]!, native.arguments["tags"]!])))
        for bad in ["call:f{city:\(q)Paris}", "call:{a:1}", "f{a:1}", "call:f{a:1", "call:f{a:1}}", "call:f[1]", "call:f{a:tru}", "call:f{:1}"] {
            #expect(Gemma4ToolFormat.parseCall(bad) == nil, "\(bad)")
        }
    }
}
