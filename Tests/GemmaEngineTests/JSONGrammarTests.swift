// Structured output: the schema compiler and byte automaton (accept / refuse byte strings for
// every supported keyword, refusals naming the keyword, the closing budget), and the shard
// mask against a brute-force check of every id of the whole vocabulary at 1, 2 and 4 shards.
import Foundation
import GemmaTestSupport
import GemmaTokenizer
import Testing
@testable import GemmaEngine

func grammar(_ schema: String?) throws -> JSONGrammar {
    guard let schema else { return try JSONGrammar(schema: nil) }
    return try JSONGrammar(schemaText: Array(schema.utf8))
}

/// Every supported keyword at once: nested object, array with item bounds, enum, integer,
/// boolean, null, required and additionalProperties false.
let personSchema = #"""
{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},
 "tags":{"type":"array","items":{"enum":["a","b"]},"minItems":1,"maxItems":2},
 "kind":{"enum":["x","y",3]},"ok":{"type":"boolean"},"n":{"type":"null"},
 "home":{"type":"object","properties":{"x":{"type":"number"}},"required":["x"]}},
 "required":["name","tags"],"additionalProperties":false}
"""#

/// Forced tool calls' grammars: Gemma 1-3's `{"name": ..., "arguments": ARGS}` with two
/// functions, and Gemma 4's `call:NAME` + ARGS where one name is a prefix of another.
let taggedCalls = String(decoding: JSONValue.serialize(JSONGrammar.tagged([
    (#"{"name": "get_weather", "arguments": "#, try! JSONValue.parse(Array(personSchema.utf8)), "}"),
    (#"{"name": "get_time", "arguments": "#, try! JSONValue.parse(Array(#"{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}"#.utf8)), "}"),
])), as: UTF8.self)
let taggedGemma4 = String(decoding: JSONValue.serialize(JSONGrammar.tagged([
    ("call:get", try! JSONValue.parse(Array(#"{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}"#.utf8)), ""),
    ("call:get_weather", try! JSONValue.parse(Array(personSchema.utf8)), ""),
])), as: UTF8.self)

@Suite struct JSONGrammarTests {
    /// Tagged alternatives: one prefix, then its schema's value, then its suffix; refused
    /// where a prefix is cut short, the wrong schema follows, or the suffix is wrong; a prefix
    /// that starts a longer one's value is refused at compile time; response_format refuses
    /// the wrapper.
    @Test func taggedAlternatives() throws {
        let g = try grammar(taggedCalls)
        #expect(g.accepts(Array(#"{"name": "get_time", "arguments": {"zone":"UTC"}}"#.utf8)))
        #expect(g.accepts(Array(#"{"name": "get_weather", "arguments":  {"name":"a","tags":["b"]}}"#.utf8)))
        #expect(!g.accepts(Array(#"{"name": "get_time", "arguments": {"name":"a","tags":["b"]}}"#.utf8)))
        #expect(!g.accepts(Array(#"{"name": "get_time", "arguments": {"zone":"UTC"}"#.utf8)))
        #expect(!g.accepts(prefix: Array(#"{"name":"get_time""#.utf8)))
        #expect(!g.accepts(prefix: Array(#"{"name": "get_tim", "#.utf8)))
        let g4 = try grammar(taggedGemma4)
        #expect(g4.accepts(Array(#"call:get{"zone":"x"}"#.utf8)) && g4.accepts(Array(#"call:get {"zone":"x"}"#.utf8)))
        #expect(!g4.accepts(prefix: Array(" call".utf8)))  // nothing before the prefix
        #expect(g4.accepts(Array(#"call:get_weather{"name":"a","tags":["a"]}"#.utf8)))
        #expect(!g4.accepts(prefix: Array("call:get_w{".utf8)) && !g4.accepts(prefix: Array("call:gex".utf8)))
        #expect(g4.minimumLength == "call:get".count + #"{"zone":""}"#.count)
        let clash = String(decoding: JSONValue.serialize(JSONGrammar.tagged([("a", .object(keys: [], values: []), ""), ("a ", .object(keys: [], values: []), "")])), as: UTF8.self)
        #expect(throws: GrammarError.self) { try grammar(clash) }
        #expect(throws: GrammarError.self) { try JSONGrammar(schema: try JSONValue.parse(Array(taggedCalls.utf8))) }
    }

    @Test func jsonObjectMode() throws {
        let g = try grammar(nil)
        for ok in [#"{}"#, #"{"a":1}"#, #"{"a": [1, 2.5, "x", true, null, {"b": {}}], "c": -0.25}"#,
                   #"{"k":"\"\\\/\b\f\n\r\t\u00e9 é ✓ 😀"}"#, "{\n  \"a\" : 0\n}", #"{    "a":1}"#] {
            #expect(g.accepts(Array(ok.utf8)), "\(ok)")
        }
        for bad in [#"[]"#, #"1"#, #"{"a"}"#, #"{a:1}"#, #"{"a":01}"#, #"{"a":1,}"#, #"{"a":1} "#, #"{"a":1}x"#,
                    "{\"a\":\"\u{01}\"}", #"{"a":1e5}"#, #"{"a":1.}"#, #"{"a":-}"#, #"{     "a":1}"#, #"{"a":tru}"#,
                    #"{"a":"\x"}"#, #"{"a":"\u12g4"}"#] {
            #expect(!g.accepts(Array(bad.utf8)), "\(bad)")
        }
        // Invalid UTF-8 inside a string: a stray continuation byte, an overlong form, a surrogate.
        for bytes in [[0x80], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF5, 0x80, 0x80, 0x80]] as [[UInt8]] {
            #expect(!g.accepts(Array(#"{"a":""#.utf8) + bytes + Array(#""}"#.utf8)))
        }
        #expect(g.minimumLength == 2)
        // More than 15 digits is refused (numbers stay exact in a double).
        #expect(g.accepts(Array(#"{"a":123456789012345}"#.utf8)))
        #expect(!g.accepts(Array(#"{"a":1234567890123456}"#.utf8)))
    }

    @Test func everyKeyword() throws {
        let g = try grammar(personSchema)
        for ok in [#"{"name":"bo","tags":["a"]}"#,
                   #"{"name":"bo","age":-3,"tags":["a","b"],"kind":3,"ok":false,"n":null,"home":{"x":0.5}}"#,
                   #"{ "name": "", "tags": [ "b" ], "kind": "y" }"#] {
            #expect(g.accepts(Array(ok.utf8)), "\(ok)")
        }
        for bad in [#"{"name":"bo"}"#,                        // required tags missing
                    #"{"tags":["a"]}"#,                       // required name missing
                    #"{"name":"bo","x":1,"tags":["a"]}"#,     // undeclared key (additionalProperties false)
                    #"{"name":"bo","age":1.5,"tags":["a"]}"#, // integer
                    #"{"name":"bo","tags":[]}"#,              // minItems
                    #"{"name":"bo","tags":["a","b","a"]}"#,   // maxItems
                    #"{"name":"bo","tags":["c"]}"#,           // enum of items
                    #"{"name":"bo","tags":["a"],"kind":"z"}"#, // enum
                    #"{"name":"bo","tags":["a"],"ok":1}"#,    // boolean
                    #"{"name":"bo","tags":["a"],"n":0}"#,     // null
                    #"{"name":"bo","tags":["a"],"home":{}}"#, // nested required
                    #"{"name":1,"tags":["a"]}"#,              // string
                    #"{"tags":["a"],"name":"bo"}"#] {         // declared order (documented restriction)
            #expect(!g.accepts(Array(bad.utf8)), "\(bad)")
        }
        // The shortest value: the required members with their shortest values.
        let shortest = #"{"name":"","tags":["a"]}"#
        #expect(g.accepts(Array(shortest.utf8)))
        #expect(g.minimumLength == shortest.utf8.count)
    }

    @Test func typeListsConstAndScalars() throws {
        let nullable = try grammar(#"{"type":["string","null"]}"#)
        #expect(nullable.accepts(Array(#""a""#.utf8)) && nullable.accepts(Array("null".utf8)))
        #expect(!nullable.accepts(Array("1".utf8)))
        let const = try grammar(#"{"const":"hi"}"#)
        #expect(const.accepts(Array(#""hi""#.utf8)) && !const.accepts(Array(#""ho""#.utf8)))
        let number = try grammar(#"{"type":"number"}"#)
        for ok in ["-0.5", "12", "0"] { #expect(number.accepts(Array(ok.utf8)), "\(ok)") }
        for bad in ["01", "-", "1.", "+1", " 1 "] { #expect(!number.accepts(Array(bad.utf8)), "\(bad)") }
        let integer = try grammar(#"{"type":"integer"}"#)
        #expect(integer.accepts(Array("-42".utf8)) && !integer.accepts(Array("4.2".utf8)))
        // enum values of another type than `type` are dropped; none left is refused.
        let e = try grammar(#"{"type":"string","enum":["a",1]}"#)
        #expect(e.accepts(Array(#""a""#.utf8)) && !e.accepts(Array("1".utf8)))
        #expect(throws: GrammarError.self) { try grammar(#"{"type":"string","enum":[1]}"#) }
        // Any JSON value (json_schema without a schema, or {}).
        let any = try grammar("{}")
        for ok in ["1", "[]", #"{"a":[null]}"#, "true", #""s""#] { #expect(any.accepts(Array(ok.utf8)), "\(ok)") }
        // A complete value that nothing can extend finishes the sequence; a number may go on.
        var s = any.start()
        #expect(any.feed(&s, Array("[1]".utf8)) && any.isComplete(s))
        var n = number.start()
        #expect(number.feed(&n, Array("12".utf8)) && number.canEnd(n) && !number.isComplete(n))
    }

    /// A tagged suffix that starts with a byte able to extend the value is refused at compile
    /// time (found by the `grammar` fuzz target: prefix `call:get`, any value, suffix `7...`;
    /// after `call:get6` the `7` went on the number, so the closing cost, the suffix, could not
    /// be met). Suffixes that cannot extend the value, such as the server's `}`, still compile.
    @Test func taggedSuffixCannotExtendTheValue() throws {
        func tagged(_ schema: String, _ suffix: String) throws -> JSONGrammar {
            try JSONGrammar(schema: JSONGrammar.tagged([("call:get", try JSONValue.parse(Array(schema.utf8)), suffix)]), allowTagged: true)
        }
        for (schema, suffix) in [("true", "7x"), (#"{"type":"number"}"#, ".5"), (#"{"type":"integer"}"#, "0"),
                                 (#"{"enum":[1,12]}"#, "2"), (#"{"type":["string","number"]}"#, "3")] {
            #expect(throws: GrammarError.self, "\(schema) then \(suffix)") { try tagged(schema, suffix) }
        }
        let g = try tagged(#"{"type":"number"}"#, "}")
        #expect(g.accepts(Array("call:get6}".utf8)) && g.accepts(Array("call:get 6.5 }".utf8)) == false)
        #expect(try tagged(#"{"type":"integer"}"#, ".").accepts(Array("call:get12.".utf8)))
    }

    /// `additionalProperties: false` holds without `properties` too (found by the `grammar`
    /// fuzz target: the grammar accepted `{"x":1}` for it, and `{"a":1}` where `a` was only
    /// `required`, values that no JSON Schema validator accepts).
    @Test func closedObjectsAdmitNoOtherNames() throws {
        let empty = try grammar(#"{"type":"object","additionalProperties":false}"#)
        #expect(empty.accepts(Array("{}".utf8)) && empty.accepts(Array("{ }".utf8)))
        for bad in [#"{"x":1}"#, #"{"":null}"#, "{,}"] { #expect(!empty.accepts(Array(bad.utf8)), "\(bad)") }
        #expect(empty.minimumLength == 2)
        var s = empty.start()
        #expect(empty.feed(&s, Array("{}".utf8)) && empty.isComplete(s))
        // Without a schema, properties {}: still only the empty object.
        #expect(try !grammar(#"{"properties":{},"additionalProperties":false}"#).accepts(Array(#"{"x":1}"#.utf8)))
        // A required name outside `properties` cannot appear in a closed object: refused,
        // naming `required` (open objects keep it, with any value).
        do {
            _ = try grammar(#"{"type":"object","properties":{},"required":["a"],"additionalProperties":false}"#)
            Issue.record("an unsatisfiable required name compiled")
        } catch let e as GrammarError {
            #expect(e.keyword == "required" && e.message.contains("\"a\""))
        }
        #expect(try grammar(#"{"type":"object","required":["a"]}"#).accepts(Array(#"{"a":[1]}"#.utf8)))
    }

    /// A schema whose shortest value is absurdly long is refused, not a trap: six nested arrays
    /// of `minItems` 4096 overflowed the closing-cost arithmetic (4097^6 > 2^63) while compiling
    /// (a 264-byte response_format took the server down); so did many required members of such
    /// values. Up to the bound the costs stay exact.
    @Test func hugeShortestValuesAreRefusedNotTrapped() throws {
        func nested(_ levels: Int, minItems: Int) -> String {
            var s = #"{"type":"integer"}"#
            for _ in 0..<levels { s = #"{"type":"array","items":\#(s),"minItems":\#(minItems)}"# }
            return s
        }
        for levels in [3, 6, 8] {
            do {
                _ = try grammar(nested(levels, minItems: 4096))
                Issue.record("\(levels) levels of minItems 4096 compiled")
            } catch let e as GrammarError {
                #expect(e.keyword == "minItems" && e.message.contains("longer than"), "\(e)")
            }
        }
        // 4096 arrays of 4096 one-digit integers: each inner array 1 + 4096 + 4095 + 1 bytes,
        // then the outer brackets and 4095 commas.
        let two = try grammar(nested(2, minItems: 4096))
        #expect(two.minimumLength == 2 + 4096 * (1 + 4096 + 4095 + 1) + 4095)
        // Required members whose values are each near the bound: their sum is refused.
        let big = nested(2, minItems: 4096).replacingOccurrences(of: #""type":"integer""#, with: #""type":"array","items":{"type":"integer"},"minItems":30"#)
        let members = (0..<20).map { "\"p\($0)\":\(big)" }.joined(separator: ",")
        let required = (0..<20).map { "\"p\($0)\"" }.joined(separator: ",")
        do {
            _ = try grammar(#"{"type":"object","properties":{\#(members)},"required":[\#(required)]}"#)
            Issue.record("20 required members of ~1 GB each compiled")
        } catch let e as GrammarError {
            #expect(e.keyword == "required" || e.keyword == "minItems", "\(e)")
        }
    }

    @Test(arguments: ["pattern", "$ref", "anyOf", "minimum", "format", "maxLength", "uniqueItems", "prefixItems"])
    func unsupportedKeywordIsNamed(keyword: String) throws {
        let schema = #"{"type":"object","properties":{"a":{"type":"string","\#(keyword)":1}}}"#
        do {
            _ = try grammar(schema)
            Issue.record("\(keyword) accepted")
        } catch let e as GrammarError {
            #expect(e.keyword == keyword)
            #expect(e.message.contains("\"\(keyword)\""))
        }
    }

    @Test func badValuesAreNamed() throws {
        let cases: [(String, String)] = [
            (#"{"type":"object","properties":{"a":{}},"additionalProperties":true}"#, "additionalProperties"),
            (#"{"type":"object","additionalProperties":{"type":"string"}}"#, "additionalProperties"),
            (#"{"type":"array","minItems":3,"maxItems":2}"#, "minItems"),
            (#"{"type":"array","maxItems":-1}"#, "maxItems"),
            (#"{"type":"date"}"#, "type"),
            (#"{"enum":[]}"#, "enum"),
            (#"{"required":"a"}"#, "required"),
            (#"[1]"#, "schema"),
        ]
        for (schema, keyword) in cases {
            #expect(throws: GrammarError.self, "\(schema)") { try grammar(schema) }
            do { _ = try grammar(schema) } catch let e as GrammarError { #expect(e.keyword == keyword, "\(schema): \(e)") }
        }
    }

    /// The closing rule: from every accepted prefix, some single byte lowers `minClose` by
    /// exactly one until the value is complete, so a budget of `minClose` one-byte tokens always
    /// closes it, and `minClose` never exceeds the bytes a real completion still had.
    @Test func closingBudgetIsExactAndReachable() throws {
        let docs: [(String?, String)] = [
            (nil, #"{"a": [1, 2.5, "x\u00e9", true, null, {"b": {}}], "c": -0.25}"#),
            (personSchema, #"{"name":"bo","age":-3,"tags":["a","b"],"kind":3,"ok":false,"n":null,"home":{"x":0.5}}"#),
            (#"{"type":"array","items":{"type":"integer"},"minItems":3}"#, "[1, 22, 333, 4]"),
            (taggedCalls, #"{"name": "get_time", "arguments": {"zone":"UTC"}}"#),
            (taggedGemma4, #"call:get_weather {"name":"bo","tags":["a"]}"#),
        ]
        for (schema, doc) in docs {
            let g = try grammar(schema)
            let bytes = Array(doc.utf8)
            var s = g.start()
            for i in 0...bytes.count {
                let need = g.minClose(s)
                #expect(need <= bytes.count - i + (g.canEnd(s) ? 0 : 0), "prefix \(i) of \(doc)")
                // Walk the cheapest closing path from here.
                var t = s
                var steps = 0
                while !g.canEnd(t) {
                    let m = g.minClose(t)
                    var moved = false
                    for b in 0...255 {
                        var u = t
                        if g.step(&u, UInt8(b)) && g.minClose(u) == m - 1 { t = u; moved = true; break }
                    }
                    #expect(moved, "stuck closing prefix \(i) of \(doc)")
                    if !moved { break }
                    steps += 1
                }
                #expect(steps == need, "prefix \(i) of \(doc): closed in \(steps), minClose said \(need)")
                if i < bytes.count { #expect(g.step(&s, bytes[i])) }
            }
        }
    }

    // MARK: The shard mask

    static let vocab: VocabularyBytes = {
        let tok = try! GemmaTokenizer.load(path: TestPaths.fixture("tokenizer/tiny_tokenizer.json").path)
        return VocabularyBytes(tokenizer: tok, vocabSize: tok.count)
    }()

    /// What the mask must allow, checked id by id over the whole vocabulary.
    static func bruteForce(_ g: JSONGrammar, _ s: JSONState, remaining: Int, vocab: VocabularyBytes) -> [Int] {
        (0..<vocab.count).filter { id in
            let b = vocab.bytes(of: id)
            if b.isEmpty { return g.canEnd(s) }
            var t = s
            return g.feed(&t, b) && g.minClose(t) <= remaining
        }
    }

    @Test(arguments: [1, 2, 4])
    func shardMasksEqualTheWholeVocabulary(shards: Int) throws {
        let vocab = Self.vocab
        let per = (vocab.count + shards - 1) / shards
        let masks = (0..<shards).map { r in ShardMask(vocab: vocab, range: (r * per)..<min(vocab.count, (r + 1) * per)) }
        let docs: [(String?, String)] = [
            (nil, #"{"the cat": [1, 2.5, "a b\n", true, null, {"b": {}}], "c": -0.25}"#),
            (personSchema, #"{"name":"the cat sat","age":-3,"tags":["a","b"],"kind":3,"ok":false,"n":null,"home":{"x":0.5}}"#),
            (taggedGemma4, #"call:get_weather {"name":"a","tags":["a"]}"#),
        ]
        var checked = 0
        for (schema, doc) in docs {
            let g = try grammar(schema)
            var s = g.start()
            for b in Array(doc.utf8) + [nil] {
                for remaining in [0, 1, 3, 8, 1000] {
                    let want = Self.bruteForce(g, s, remaining: remaining, vocab: vocab)
                    let got = masks.flatMap { $0.allowedIds(g, s, remaining: remaining) }
                    #expect(got == want, "\(doc) state \(s) remaining \(remaining)")
                    checked += 1
                }
                if let b { #expect(g.step(&s, b)) }
            }
        }
        #expect(checked > 500)
    }

    /// Random walks under the two-shard mask (ids drawn uniformly among the allowed ones, a
    /// fixed-seed generator) always end in a complete value within the budget, for the tagged
    /// tool-call grammars and a nested schema.
    @Test func maskedRandomWalksCloseWithinBudget() throws {
        let vocab = Self.vocab
        let masks = [ShardMask(vocab: vocab, range: 0..<vocab.count / 2), ShardMask(vocab: vocab, range: vocab.count / 2..<vocab.count)]
        var rng = SplitMix64(seed: 42)
        for text in [taggedCalls, taggedGemma4, personSchema] {
            let g = try grammar(text)
            for _ in 0..<30 {
                var s = g.start()
                var left = Int.random(in: g.minimumLength...(g.minimumLength + 60), using: &rng)
                while !g.isComplete(s) {
                    let allowed = masks.flatMap { $0.allowedIds(g, s, remaining: left - 1) }
                    guard let id = allowed.randomElement(using: &rng), left > 0 else { break }
                    let b = vocab.bytes(of: id)
                    if b.isEmpty { break }  // an end id: allowed only where the value is complete
                    #expect(g.feed(&s, b))
                    left -= 1
                }
                #expect(g.canEnd(s) && left >= 0, "\(text)")
            }
        }
    }

    @Test func vocabularyBytesRoundTrip() throws {
        let v = Self.vocab
        let back = try #require(VocabularyBytes.decode(v.encode()))
        #expect(back.count == v.count)
        for id in 0..<v.count { #expect(back.bytes(of: id) == v.bytes(of: id)) }
        #expect(VocabularyBytes.decode(Array(v.encode().dropLast())) == nil)
    }
}
