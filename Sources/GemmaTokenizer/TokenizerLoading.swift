// Building a `GemmaTokenizer` from the three places a Gemma vocabulary ships: GGUF metadata
// (`tokenizer.ggml.*`), Hugging Face `tokenizer.json` (BPE with merges), and SentencePiece's
// `tokenizer.model` (protobuf, see SentencePieceModel.swift). Each failure names the file.
import Foundation
import GemmaFormats

extension GemmaTokenizer {
    /// Loads the tokenizer a GGUF model carries. `tokenizer.ggml.model` "llama" (SentencePiece,
    /// Gemma 1-3) merges by score as llama.cpp's SPM tokenizer does; "gemma4" merges by the
    /// rank of `tokenizer.ggml.merges` (by score if the file has no merge list).
    public convenience init(gguf: GGUFFile) throws {
        let src = gguf.path
        func wrap<T>(_ body: () throws -> T) throws -> T {
            do { return try body() } catch let e as GGUFError {
                // GGUFError descriptions start with the path already.
                var reason = e.description
                if reason.hasPrefix(src + ": ") { reason.removeFirst(src.count + 2) }
                throw TokenizerError.invalidVocabulary(source: src, reason: reason)
            }
        }
        let model = try wrap { try gguf.string("tokenizer.ggml.model") }
        let pieces = try wrap { try gguf.stringArray("tokenizer.ggml.tokens") }
        let scores = try gguf.value("tokenizer.ggml.scores") == nil
            ? [Float](repeating: 0, count: pieces.count) : wrap { try gguf.floatArray("tokenizer.ggml.scores") }
        let rawTypes = try gguf.value("tokenizer.ggml.token_type") == nil
            ? [Int](repeating: 1, count: pieces.count) : wrap { try gguf.intArray("tokenizer.ggml.token_type") }
        guard scores.count == pieces.count, rawTypes.count == pieces.count else {
            throw TokenizerError.invalidVocabulary(source: src, reason: "\(pieces.count) tokens but \(scores.count) scores and \(rawTypes.count) token types")
        }
        var types: [TokenType] = []
        types.reserveCapacity(rawTypes.count)
        for (i, t) in rawTypes.enumerated() {
            guard let tt = TokenType(rawValue: Int32(truncatingIfNeeded: t)) else {
                throw TokenizerError.invalidVocabulary(source: src, reason: "token \(i) has unknown type \(t)")
            }
            types.append(tt)
        }
        let rule: MergeRule
        switch model {
        case "llama":
            rule = .scores
        case "gemma4" where gguf.value("tokenizer.ggml.merges") != nil:
            // Gemma 4 GGUFs carry SentencePiece-style BPE with an explicit merge list
            // (raw UTF-8, "▁" for spaces, merges over the whole text): merge by rank.
            let merges = try wrap { try gguf.stringArray("tokenizer.ggml.merges") }
            rule = .merges(try Self.mergeTable(merges.map(Self.splitMerge), pieces: pieces, source: src))
        case "gemma4":
            rule = .scores
        default:
            // GPT-2 byte-level BPE and others need a different pre-tokenizer: not Gemma's.
            throw TokenizerError.invalidVocabulary(source: src, reason: "tokenizer.ggml.model \"\(model)\" is not supported (expected llama or gemma4)")
        }
        func optionalID(_ key: String) throws -> Int32? {
            guard gguf.value(key) != nil else { return nil }
            return Int32(truncatingIfNeeded: try wrap { try gguf.int(key) })
        }
        func flag(_ key: String, default d: Bool) throws -> Bool {
            gguf.value(key) == nil ? d : try wrap { try gguf.bool(key) }
        }
        try self.init(pieces: pieces, scores: scores, types: types, mergeRule: rule,
                      bosID: optionalID("tokenizer.ggml.bos_token_id"),
                      eosID: optionalID("tokenizer.ggml.eos_token_id"),
                      unknownID: optionalID("tokenizer.ggml.unknown_token_id"),
                      // llama.cpp's defaults for an SPM vocabulary.
                      addBOS: flag("tokenizer.ggml.add_bos_token", default: true),
                      addEOS: flag("tokenizer.ggml.add_eos_token", default: false),
                      addSpacePrefix: flag("tokenizer.ggml.add_space_prefix", default: model == "llama" ? true : false),
                      source: src)
    }

    /// Loads a model file's tokenizer: a `.gguf` file, a `tokenizer.json` / `tokenizer.model`
    /// file, or a directory holding one of them (tokenizer.json preferred).
    public static func load(path: String) throws -> GemmaTokenizer {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TokenizerError.unreadable(file: path, reason: "no such file or directory")
        }
        if isDir.boolValue {
            let dir = URL(fileURLWithPath: path)
            for name in ["tokenizer.json", "tokenizer.model"] {
                let p = dir.appendingPathComponent(name).path
                if FileManager.default.fileExists(atPath: p) { return try load(path: p) }
            }
            throw TokenizerError.unreadable(file: path, reason: "the directory has neither tokenizer.json nor tokenizer.model")
        }
        if path.hasSuffix(".json") { return try GemmaTokenizer(tokenizerJSON: path) }
        if path.hasSuffix(".model") { return try GemmaTokenizer(sentencePieceModel: path) }
        do {
            return try GemmaTokenizer(gguf: GGUFFile(path: path))
        } catch let e as MappedFileError {
            throw TokenizerError.unreadable(file: path, reason: e.description)
        } catch let e as GGUFError {
            throw TokenizerError.unreadable(file: path, reason: e.description)
        }
    }

    /// Splits a "left right" merge line at its first space byte. Not `String.split`: that works
    /// on grapheme clusters, and a combining mark after the space (e.g. "য ়") would glue
    /// itself to the space and hide it.
    static func splitMerge(_ line: String) -> (String, String)? {
        let b = Array(line.utf8)
        guard let sp = b.firstIndex(of: 0x20) else { return nil }
        return (String(decoding: b[..<sp], as: UTF8.self), String(decoding: b[(sp + 1)...], as: UTF8.self))
    }

    /// Merge table from (left, right) piece pairs in priority order.
    static func mergeTable(_ pairs: [(String, String)?], pieces: [String], source: String) throws -> [UInt64: MergeEntry] {
        // Keyed by exact bytes: Swift String equality is canonical-equivalence, pieces are not.
        var byBytes: [[UInt8]: Int32] = [:]
        for (i, p) in pieces.enumerated() { byBytes[Array(p.utf8)] = Int32(i) }
        var table: [UInt64: MergeEntry] = [:]
        table.reserveCapacity(pairs.count)
        for (rank, pair) in pairs.enumerated() {
            guard let (a, b) = pair else {
                throw TokenizerError.invalidVocabulary(source: source, reason: "merge #\(rank) is not two pieces")
            }
            guard let ia = byBytes[Array(a.utf8)], let ib = byBytes[Array(b.utf8)], let r = byBytes[Array((a + b).utf8)] else {
                throw TokenizerError.invalidVocabulary(source: source, reason: "merge #\(rank) (\(a) \(b)) uses a piece that is not in the vocabulary")
            }
            let key = UInt64(UInt32(bitPattern: ia)) << 32 | UInt64(UInt32(bitPattern: ib))
            if table[key] == nil { table[key] = MergeEntry(rank: Int32(rank), result: r) }
        }
        return table
    }

    /// Loads a Hugging Face `tokenizer.json` (model type BPE, as Gemma ships). Added tokens
    /// marked special become control tokens; other added tokens are user-defined pieces
    /// (matched whole before BPE; "▁" in them stands for a space). BOS/EOS insertion comes
    /// from a `tokenizer_config.json` next to the file if present, else from the
    /// post-processor template.
    public convenience init(tokenizerJSON path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError.unreadable(file: path, reason: "cannot read the file")
        }
        let configPath = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("tokenizer_config.json").path
        try self.init(tokenizerJSONData: data, configData: FileManager.default.contents(atPath: configPath), source: path)
    }

    /// `init(tokenizerJSON:)` on bytes already read: `data` is the tokenizer.json,
    /// `configData` the tokenizer_config.json beside it (if any); `source` names it in errors.
    public convenience init(tokenizerJSONData data: Data, configData: Data?, source path: String) throws {
        let root: JSONValue
        do { root = try OrderedJSONParser.parse([UInt8](data)) } catch {
            throw TokenizerError.unreadable(file: path, reason: "\(error)")
        }
        guard root.members != nil else { throw TokenizerError.unreadable(file: path, reason: "not a JSON object") }
        guard let model = root["model"], model.members != nil else {
            throw TokenizerError.invalidVocabulary(source: path, reason: "no \"model\" object")
        }
        guard model["type"]?.string == "BPE" else {
            throw TokenizerError.invalidVocabulary(source: path, reason: "model type \(model["type"]?.string ?? "missing") is not BPE")
        }
        // Ordered members with exact keys (see OrderedJSON.swift for why not a dictionary).
        guard let vocab = model["vocab"]?.members else {
            throw TokenizerError.invalidVocabulary(source: path, reason: "model.vocab is not an object")
        }
        var entries: [(String, Int)] = []
        entries.reserveCapacity(vocab.count)
        for (k, v) in vocab {
            guard let id = v.int else {
                throw TokenizerError.invalidVocabulary(source: path, reason: "vocab entry \(k) has no integer id")
            }
            entries.append((k, id))
        }
        var added: [(content: String, id: Int, special: Bool)] = []
        for (i, a) in (root["added_tokens"]?.array ?? []).enumerated() {
            guard let c = a["content"]?.string, let id = a["id"]?.int else {
                throw TokenizerError.invalidVocabulary(source: path, reason: "added_tokens[\(i)] needs content and id")
            }
            added.append((c, id, a["special"]?.bool ?? false))
        }
        let size = max(entries.map(\.1).max() ?? -1, added.map(\.id).max() ?? -1) + 1
        guard size > 0, size <= 16_777_216 else {
            throw TokenizerError.invalidVocabulary(source: path, reason: "vocabulary size \(size) is out of range")
        }
        var pieces = [String](repeating: "", count: size)
        var types = [TokenType](repeating: .unused, count: size)
        for (k, id) in entries {
            guard id >= 0 else { throw TokenizerError.invalidVocabulary(source: path, reason: "negative id for \(k)") }
            pieces[id] = k
            types[id] = GemmaTokenizer.byteValue(Array(k.utf8)) != nil ? .byte : .normal
        }
        for a in added {
            guard a.id >= 0 else { throw TokenizerError.invalidVocabulary(source: path, reason: "negative id for \(a.content)") }
            pieces[a.id] = a.special ? a.content : a.content.replacingOccurrences(of: "\u{2581}", with: " ")
            types[a.id] = a.special ? .control : .userDefined
        }
        var pairs: [(String, String)?] = []
        for m in model["merges"]?.array ?? [] {
            if let s = m.string {
                pairs.append(Self.splitMerge(s))
            } else if let arr = m.array, arr.count == 2, let a = arr[0].string, let b = arr[1].string {
                pairs.append((a, b))
            } else {
                pairs.append(nil)
            }
        }
        // Merges refer to normal pieces; user-defined ones were respelled above, so look up
        // against the vocab's own spelling.
        var mergePieces = pieces
        for (k, id) in entries { mergePieces[id] = k }
        let table = try Self.mergeTable(pairs, pieces: mergePieces, source: path)

        // A Prepend("▁") normalizer is SentencePiece's dummy prefix (Gemma 1 era files).
        let addPrefix = Self.mentions(root["normalizer"], "Prepend")
        func idOf(_ s: String?) -> Int32? {
            guard let s else { return nil }
            let want = Array(s.utf8)
            return pieces.firstIndex { Array($0.utf8) == want }.map(Int32.init)
        }
        var addBOS = Self.mentions(root["post_processor"], "<bos>")
        var addEOS = false
        var bosText = "<bos>", eosText = "<eos>"
        if let cd = configData,
           let config = (try? JSONSerialization.jsonObject(with: cd)) as? [String: Any] {
            if let b = config["add_bos_token"] as? Bool { addBOS = b }
            if let e = config["add_eos_token"] as? Bool { addEOS = e }
            if let b = config["bos_token"] as? String { bosText = b }
            if let e = config["eos_token"] as? String { eosText = e }
        }
        try self.init(pieces: pieces, scores: [Float](repeating: 0, count: size), types: types,
                      mergeRule: .merges(table), bosID: idOf(bosText), eosID: idOf(eosText),
                      unknownID: idOf(model["unk_token"]?.string), addBOS: addBOS, addEOS: addEOS,
                      addSpacePrefix: addPrefix, source: path)
    }

    /// Whether any string inside `value` equals `text` (e.g. a normalizer of type "Prepend").
    private static func mentions(_ value: JSONValue?, _ text: String) -> Bool {
        switch value {
        case let .string(s)?: return s == text
        case let .array(a)?: return a.contains { mentions($0, text) }
        case let .object(k, v)?: return k.contains(text) || v.contains { mentions($0, text) }
        default: return false
        }
    }
}
