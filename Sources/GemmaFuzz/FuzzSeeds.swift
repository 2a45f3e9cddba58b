// Seed inputs for each fuzz target, built from the committed test fixtures (small real files
// of each format) and a few hand-written ones. `Scripts/fuzz.sh seeds` writes them to
// Fuzz/corpus/<target>/, where they are committed; libFuzzer starts from them.
import Foundation
import GemmaEngine
import GemmaFormats
import GemmaTokenizer

public enum FuzzSeeds {
    /// The seeds of `target` as (file name, bytes), from the fixtures under `fixtures`
    /// (Tests/Fixtures).
    public static func seeds(_ target: FuzzTarget, fixtures: URL) throws -> [(String, [UInt8])] {
        func file(_ relative: String) throws -> (String, [UInt8]) {
            let url = fixtures.appendingPathComponent(relative)
            guard let data = FileManager.default.contents(atPath: url.path) else {
                throw FuzzSetupError(description: "missing fixture \(url.path)")
            }
            return (url.lastPathComponent, [UInt8](data))
        }
        switch target {
        case .gguf:
            return try ["gguf/types_v2.gguf", "gguf/types_v3.gguf", "gguf/align64_v3.gguf", "tokenizer/tiny_gemma4.gguf"].map(file)
        case .ggufModel:
            return try ["gguf_models/gemma3_pattern_q8.gguf", "gguf_models/gemma1_mqa.gguf"].map(file)
        case .safetensors:
            return [("three_dtypes.safetensors", safetensorsFile([("a", "F32", [2, 3]), ("b", "BF16", [4]), ("c", "F16", [1, 2, 2])],
                                                                   metadata: true)),
                    ("empty.safetensors", safetensorsFile([], metadata: false))]
        case .tokenizerJSON:
            return [try file("tokenizer/tiny_tokenizer.json")]
        case .tokenizerModel:
            let (_, gguf) = try file("tokenizer/tiny_gemma4.gguf")
            let tok = try GemmaTokenizer(gguf: GGUFFile(file: MappedFile(bytes: gguf, name: "tiny_gemma4.gguf")))
            return [("tiny_gemma4.model", [UInt8](tok.sentencePieceModelData()))]
        case .wire:
            let names = try FileManager.default.contentsOfDirectory(atPath: fixtures.appendingPathComponent("wire").path)
            return try names.filter { $0.hasSuffix(".bin") }.sorted().map { try file("wire/" + $0) }
        case .http:
            // First byte: even = chat completions, odd = completions.
            let chat: [String] = [
                #"{"model":"m","messages":[{"role":"user","content":"Hello"}]}"#,
                #"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"temperature":0.7,"top_p":0.9,"max_tokens":16,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true},"seed":7}"#,
                #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":100000}"#,
                #"{"model":"m","messages":[{"role":"assistant","content":null},{"role":"user","content":"<start_of_turn>"}],"n":1,"top_k":40,"min_p":0.05}"#,
            ]
            let completion: [String] = [
                #"{"model":"m","prompt":"Once upon a time","max_tokens":8}"#,
                #"{"model":"m","prompt":["a"],"temperature":0,"stop":"."}"#,
            ]
            // Seeds 2 and 3 are refused by design (context overflow; a conversation opening
            // with the assistant), so the error paths are in the corpus from the start.
            return chat.enumerated().map { ("chat\($0.offset)\($0.offset >= 2 ? "_refused" : "").json", [0] + Array($0.element.utf8)) }
                + completion.enumerated().map { ("completion\($0.offset).json", [1] + Array($0.element.utf8)) }
        case .grammar:
            return grammarSeeds()
        }
    }

    /// The `grammar` target's seeds: schema texts (then a NUL and the walks' choices) of every
    /// supported keyword, a forced tool call's tagged wrapper for Gemma 1-3 and for Gemma 4
    /// (one prefix a prefix of another), and two generated from bytes (`{}`; two tagged
    /// alternatives, a boolean and a string).
    static func grammarSeeds() -> [(String, [UInt8])] {
        let person = #"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"#
            + #""tags":{"type":"array","items":{"enum":["a","b"]},"minItems":1,"maxItems":2},"kind":{"enum":["x","y",3]},"#
            + #""ok":{"type":"boolean"},"n":{"type":"null"},"home":{"type":"object","properties":{"x":{"type":"number"}},"required":["x"]}},"#
            + #""required":["name","tags"],"additionalProperties":false}"#
        let zone = #"{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}"#
        func tagged(_ alternatives: [(String, String, String)]) -> String {
            String(decoding: JSONValue.serialize(JSONGrammar.tagged(alternatives.map {
                (prefix: $0.0, schema: (try? JSONValue.parse(Array($0.1.utf8))) ?? .null, suffix: $0.2)
            })), as: UTF8.self)
        }
        let texts: [(String, String)] = [
            ("person.json", person),
            ("json_mode.json", #"{"type":"object"}"#),
            ("scalars.json", #"{"type":["number","string","boolean","null"],"description":"any scalar"}"#),
            ("arrays.json", #"{"type":"array","items":{"type":"array","items":{"type":"integer"},"maxItems":2},"minItems":1,"maxItems":3}"#),
            ("tool_gemma3.json", tagged([(#"{"name": "get_weather", "arguments": "#, person, "}"), (#"{"name": "get_time", "arguments": "#, zone, "}")])),
            ("tool_gemma4.json", tagged([("call:get", zone, ""), ("call:get_weather", person, "")])),
        ]
        let walk = (0..<96).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        return texts.map { ($0.0, Array($0.1.utf8) + [0] + walk) }
            + [("generated0.bin", [1, 9, 3, 0, 2, 4, 11, 5, 7, 1, 12, 3, 1, 1, 2] + walk),
               ("generated1.bin", [0, 1, 1, 0, 3, 8, 1, 0, 1, 1, 0, 1, 1, 0] + walk)]
    }

    /// A valid safetensors file with the given tensors (data filled with a counter).
    static func safetensorsFile(_ tensors: [(String, String, [Int])], metadata: Bool) -> [UInt8] {
        var entries: [String] = metadata ? [#""__metadata__":{"format":"pt"}"#] : []
        var offset = 0
        for (name, dtype, shape) in tensors {
            let bytes = shape.reduce(1, *) * (dtype == "F32" ? 4 : 2)
            entries.append("\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        var header = Array("{\(entries.joined(separator: ","))}".utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out += header
        out += (0..<offset).map { UInt8(truncatingIfNeeded: $0) }
        return out
    }
}
