// The `grammar` fuzz target: a JSON Schema (generated from the input bytes, or the input's own
// text when it starts with `{`) compiled to the constrained-decoding automaton (JSONGrammar,
// with the `x-gemma-tagged` wrapper of forced tool calls), then walked byte by byte and token
// by token while the shard mask (ShardMask over a small vocabulary split into 1, 2 and 3
// shards) is checked against stepping the grammar itself: an id the mask allows must be
// accepted by feeding its bytes and leave the value closable within the tokens left, and every
// id that is must be allowed. Also checked at every state: the closing cost `minClose` is exact
// (0 exactly when the value can end; otherwise some byte lowers it by one, which is what lets
// the mask promise a budget it can keep), `isComplete` agrees with the bytes that extend, and
// every complete output parses as JSON and meets the schema (a validator written apart).
import GemmaEngine
import GemmaTokenizer

/// The fuzz input as a source of choices; past its end, a SplitMix64 seeded from its bytes,
/// so walks go on deterministically after the input runs out.
struct FuzzChoices {
    let bytes: [UInt8]
    var at = 0
    var rng: UInt64

    init(_ bytes: [UInt8], from start: Int = 0) {
        self.bytes = bytes
        at = start
        var h: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a of the input
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        rng = h
    }

    mutating func byte() -> UInt8 {
        if at < bytes.count { at += 1; return bytes[at - 1] }
        rng &+= 0x9E37_79B9_7F4A_7C15
        var z = rng
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt8(truncatingIfNeeded: z ^ (z >> 31))
    }

    /// 0..<n (0 when n <= 1).
    mutating func below(_ n: Int) -> Int {
        guard n > 1 else { return 0 }
        return n <= 256 ? Int(byte()) % n : (Int(byte()) << 8 | Int(byte())) % n
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }
}

enum GrammarFuzz {
    /// Property names and string values: plain, escaped, multi-byte, empty, and names that
    /// share prefixes.
    static let names = ["a", "b", "ab", "name", "arguments", "é", "日本", "a\"b", "a\\b", "", "x y", "🙂", "n\u{1}"]
    static let numbers: [Double] = [0, 1, 12, -1, 0.5, -0.25, 100, 1e21, 123_456_789_012_345]
    /// Prefixes like the ones ToolCalls builds (Gemma 1-3 and Gemma 4), some sharing a start.
    static let prefixes = [#"{"name": "get_weather", "arguments": "#, #"{"name": "get", "arguments": "#,
                           "call:get", "call:get_weather", "call:", "<tool>", "é:", "x"]
    static let suffixes = ["}", "", "<end>", "\n", " }", "🙂"]
    static let types = ["object", "array", "string", "number", "integer", "boolean", "null"]

    static func literal(_ r: inout FuzzChoices, depth: Int) -> JSONValue {
        switch r.below(depth > 1 ? 4 : 6) {
        case 0: return .string(names[r.below(names.count)])
        case 1: return .number(numbers[r.below(numbers.count)])
        case 2: return .bool(r.bool())
        case 3: return .null
        case 4: return .array((0..<r.below(3)).map { _ in literal(&r, depth: depth + 1) })
        default:
            let n = r.below(3)
            return .object(keys: (0..<n).map { _ in names[r.below(names.count)] }, values: (0..<n).map { _ in literal(&r, depth: depth + 1) })
        }
    }

    static func schema(_ r: inout FuzzChoices, depth: Int) -> JSONValue {
        var keys: [String] = [], values: [JSONValue] = []
        func put(_ k: String, _ v: JSONValue) { keys.append(k); values.append(v) }
        switch r.below(depth >= 4 ? 9 : 16) {
        case 0: put("type", .string("string"))
        case 1: put("type", .string("number"))
        case 2: put("type", .string("integer"))
        case 3: put("type", .string("boolean"))
        case 4: put("type", .string("null"))
        case 5:
            put("enum", .array((0..<(1 + r.below(4))).map { _ in literal(&r, depth: 0) }))
            if r.below(4) == 0 { put("type", .string(types[r.below(types.count)])) }
        case 6:
            put("const", literal(&r, depth: 0))
            if r.below(4) == 0 { put("enum", .array([literal(&r, depth: 0), literal(&r, depth: 0)])) }
        case 7: return r.bool() ? .bool(true) : .object(keys: [], values: [])
        case 8: put("type", .array((0..<(1 + r.below(3))).map { _ in .string(types[r.below(types.count)]) }))
        case 9, 10, 11:
            if r.below(3) > 0 { put("type", .string("object")) }
            var pk: [String] = [], pv: [JSONValue] = []
            for _ in 0..<r.below(5) { pk.append(names[r.below(names.count)]); pv.append(schema(&r, depth: depth + 1)) }
            if !pk.isEmpty || r.bool() { put("properties", .object(keys: pk, values: pv)) }
            let req = (0..<r.below(4)).map { _ in JSONValue.string(r.below(4) == 0 ? names[r.below(names.count)] : (pk.isEmpty ? "a" : pk[r.below(pk.count)])) }
            if !req.isEmpty { put("required", .array(req)) }
            switch r.below(4) { case 0: put("additionalProperties", .bool(false)); case 1: put("additionalProperties", .bool(true)); default: break }
        case 12, 13, 14:
            if r.below(3) > 0 { put("type", .string("array")) }
            if r.below(4) > 0 { put("items", schema(&r, depth: depth + 1)) }
            // Now and then the largest minItems accepted, nested (costs near the bound).
            let lo = r.below(16) == 0 ? 4096 : r.below(4)
            if r.bool() { put("minItems", .number(Double(lo))) }
            if r.bool() { put("maxItems", .number(Double(lo + r.below(4) - (r.below(8) == 0 ? 1 : 0)))) }
        default:
            // Outside the subset (a clear compile error) or mixed keywords.
            switch r.below(4) {
            case 0: put("anyOf", .array([schema(&r, depth: depth + 1), schema(&r, depth: depth + 1)]))
            case 1: put("type", .string("text"))
            case 2: put("items", schema(&r, depth: depth + 1)); put("properties", .object(keys: ["a"], values: [schema(&r, depth: depth + 1)]))
            default: put("type", .array([.string("object"), .string("array")])); put("items", .bool(true)); put("required", .array([.string("a")]))
            }
        }
        if r.below(8) == 0 { put("description", .string("d")) }
        return .object(keys: keys, values: values)
    }

    static func text(_ r: inout FuzzChoices, _ pool: [String]) -> String {
        if r.below(4) > 0 { return pool[r.below(pool.count)] }
        return String(decoding: (0..<r.below(6)).map { _ in r.byte() }, as: UTF8.self)
    }

    /// Tokens every vocabulary has: structure, whitespace runs, numbers, literals and pieces
    /// of them, escapes, whole and partial multi-byte characters, and two ids without bytes.
    static let baseTokens: [[UInt8]] = [
        "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "  ", " \n ", "    ", "     ", "0", "1", "12", "-", ".", "5", "-0",
        "1.", "0.5", "true", "false", "null", "tru", "e", "n", "ul", "a", "b", "ab", "é", "日", "🙂", "\\", "\\n", "\\u", "00e9",
        "\\\"", "\"a\"", "\":", "\",", "\"}", "},{", "{\"", "\": \"", "\"a\":", " {", "}}", "]}", "x", "call", ":get", "_weather",
        "\t", "\r", "name", "\"name\": \"", "arguments", "e+21", "<end>",
    ].map { Array($0.utf8) } + [[0xC3], [0xA9], [0xF0, 0x9F], [0x99, 0x82], [0xE6, 0x97], [0xA5, 0x22], [0xFF], [], []]

    static func vocabulary(_ r: inout FuzzChoices, schemaText: [UInt8]) -> [[UInt8]] {
        var tokens = baseTokens
        // Pieces of the schema's own text (keys, prefixes, enum values).
        for _ in 0..<r.below(16) {
            guard !schemaText.isEmpty else { break }
            let a = r.below(schemaText.count), n = 1 + r.below(12)
            tokens.append(Array(schemaText[a..<min(schemaText.count, a + n)]))
        }
        // Bytes of the input, mostly from structural and text characters.
        let alphabet = Array("{}[]\":, \n0123456789-.aetrulfnsé日🙂\\".utf8)
        for _ in 0..<r.below(24) {
            tokens.append((0..<(1 + r.below(6))).map { _ in r.below(3) == 0 ? r.byte() : alphabet[r.below(alphabet.count)] })
        }
        // Every single byte, as a tokenizer with byte fallback has.
        if r.below(6) == 0 { tokens += (0...255).map { [UInt8($0)] } }
        // Shuffled, so that shard boundaries fall between unlike ids.
        for i in stride(from: tokens.count - 1, to: 0, by: -1) { tokens.swapAt(i, r.below(i + 1)) }
        return tokens
    }

    /// 1, 2 and 3 contiguous shards of 0..<count, cut at chosen places (a shard may be empty).
    static func shardings(_ r: inout FuzzChoices, count: Int) -> [[Range<Int>]] {
        [1, 2, 3].map { k in
            var cuts = (0..<(k - 1)).map { _ in r.below(count + 1) }.sorted()
            cuts = [0] + cuts + [count]
            return (0..<k).map { cuts[$0]..<cuts[$0 + 1] }
        }
    }

    static func show(_ b: some Sequence<UInt8>) -> String {
        String(reflecting: String(decoding: Array(b), as: UTF8.self)) + " \(Array(b))"
    }

    /// Runs one input; returns whether its schema compiled.
    static func run(_ bytes: [UInt8]) -> Bool {
        var r: FuzzChoices
        let schemaText: [UInt8]
        if bytes.first == 0x7B {  // schema text up to the first NUL, choices after it
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            schemaText = Array(bytes[..<end])
            r = FuzzChoices(bytes, from: min(bytes.count, end + 1))
        } else {
            r = FuzzChoices(bytes)
            if r.below(3) == 0 {
                let alternatives = (0..<(1 + r.below(3))).map { _ in
                    (prefix: text(&r, prefixes), schema: schema(&r, depth: 1), suffix: text(&r, suffixes))
                }
                schemaText = JSONValue.serialize(JSONGrammar.tagged(alternatives))
            } else {
                schemaText = JSONValue.serialize(schema(&r, depth: 0))
            }
        }
        // The engine's path: the schema text carried by the plan (tagged wrapper allowed).
        guard let g = try? JSONGrammar(schemaText: schemaText) else { return false }
        let tokens = vocabulary(&r, schemaText: schemaText)
        let vocab = VocabularyBytes(tokens)
        let masks = shardings(&r, count: tokens.count).map { $0.map { ShardMask(vocab: vocab, range: $0) } }
        let everyByte = (0...255).allSatisfy { b in tokens.contains([UInt8(b)]) }
        var checker = Checker(g: g, tokens: tokens, masks: masks, schemaText: schemaText)

        // 1. The input's own bytes through the automaton (until one is refused).
        var s = g.start()
        var path: [UInt8] = []
        for _ in 0..<r.below(48) {
            let b = r.byte()
            guard g.step(&s, b) else { break }
            path.append(b)
            checker.checkState(s, path: path)
        }
        // 2. A walk that takes only accepted bytes (deep states), the mask checked on the way.
        s = g.start()
        path = []
        for i in 0..<(8 + r.below(56)) {
            let next = checker.checkState(s, path: path)
            if i % 3 == 0 { checker.checkMask(s, path: path, remaining: r.below(3) == 0 ? 1 << 20 : g.minClose(s) + r.below(6) - 2) }
            guard !next.isEmpty else { break }
            // Mostly the byte that closes soonest now and then, so values finish.
            let b = r.below(4) == 0 ? next.min { $0.1 < $1.1 }!.0 : next[r.below(next.count)].0
            guard g.step(&s, b) else { preconditionFailure("grammar: byte \(b) accepted once, refused on the second try") }
            path.append(b)
        }
        // 3. Token walks as the engine runs them: a budget, the mask each step, an allowed id
        // (or now and then any id) fed to the automaton.
        for _ in 0..<(1 + r.below(2)) {
            s = g.start()
            path = []
            let budget = r.below(3) == 0 ? 1 << 20 : g.minimumLength / 2 + r.below(24)
            for step in 0..<min(budget, 24) {
                let remaining = max(0, budget - step - 1)
                checker.checkState(s, path: path)
                let allowed = checker.checkMask(s, path: path, remaining: remaining)
                let id: Int
                if r.below(8) == 0 { id = r.below(tokens.count) } else {
                    guard !allowed.isEmpty else {
                        // Nothing to draw: with a token for every byte, only right when the
                        // state's closing cost is above the tokens left (this one included),
                        // which the previous step's mask never leads to.
                        precondition(!everyByte || g.minClose(s) > remaining + 1,
                                     "grammar: no id allowed with \(remaining) tokens left, closing cost \(g.minClose(s)), after \(show(path)) of \(show(schemaText))")
                        break
                    }
                    id = allowed[r.below(allowed.count)]
                }
                if tokens[id].isEmpty { break }
                guard g.feed(&s, tokens[id]) else { break }
                path += tokens[id]
            }
        }
        return true
    }

    /// Whether `v` is valid under `schema` by JSON Schema's rules (draft 2020-12) for the
    /// keywords the grammar compiles: the oracle for what the automaton accepts as complete.
    /// Written from the specification, with its own type and equality rules, not from the
    /// grammar or the server's `SchemaCheck`, so a misreading shared by those does not hide
    /// here. Each keyword constrains only instances of its own type, as the specification says.
    static func valid(_ v: JSONValue, _ schema: JSONValue) -> Bool {
        switch schema {
        case let .bool(b): return b
        case .object: break
        default: return false
        }
        if let t = schema["type"] {
            let names: [String]
            switch t {
            case let .string(n): names = [n]
            case let .array(a): names = a.compactMap(\.string)
            default: return false
            }
            if !names.contains(where: { instance(v, is: $0) }) { return false }
        }
        if let c = schema["const"], !equal(c, v) { return false }
        if let e = schema["enum"] {
            guard case let .array(options) = e, options.contains(where: { equal($0, v) }) else { return false }
        }
        switch v {
        case let .object(keys, values):
            if case let .array(required)? = schema["required"] {
                for case let .string(name) in required where !keys.contains(name) { return false }
            }
            let properties = schema["properties"]
            for (k, x) in zip(keys, values) {
                if let p = properties?[k] {
                    if !valid(x, p) { return false }
                } else if let extra = schema["additionalProperties"], !valid(x, extra) {
                    return false
                }
            }
        case let .array(items):
            if let n = schema["minItems"], case let .number(d) = n, Double(items.count) < d { return false }
            if let n = schema["maxItems"], case let .number(d) = n, Double(items.count) > d { return false }
            if let each = schema["items"], !items.allSatisfy({ valid($0, each) }) { return false }
        default: break
        }
        return true
    }

    /// JSON Schema's primitive types; "integer" is any number with a zero fractional part.
    static func instance(_ v: JSONValue, is type: String) -> Bool {
        switch v {
        case .null: return type == "null"
        case .bool: return type == "boolean"
        case .string: return type == "string"
        case .array: return type == "array"
        case .object: return type == "object"
        case let .number(d): return type == "number" || (type == "integer" && d.isFinite && d == d.rounded(.towardZero))
        }
    }

    /// JSON Schema's instance equality (for `const` and `enum`): numbers by value, strings by
    /// their code points, arrays element by element, objects as sets of members whatever order.
    static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case let (.array(x), .array(y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0.0, $0.1) }
        case let (.object(kx, _), .object(ky, _)):
            guard Set(kx) == Set(ky) else { return false }
            return kx.allSatisfy { k in equal(a[k]!, b[k]!) }
        default: return false
        }
    }

    /// Whether complete output `text` is a value meeting the schema (for the tagged wrapper:
    /// one alternative's prefix, a value meeting its schema, its suffix).
    static func outputValid(_ text: [UInt8], schema: JSONValue) -> Bool {
        func value(_ bytes: ArraySlice<UInt8>, _ schema: JSONValue) -> Bool {
            guard let v = try? JSONValue.parse(Array(bytes)) else { return false }
            return valid(v, schema)
        }
        guard let alternatives = schema[JSONGrammar.taggedKeyword]?.array else { return value(text[...], schema) }
        return alternatives.contains { a in
            guard let p = a["prefix"]?.string.map({ Array($0.utf8) }), let x = a["suffix"]?.string.map({ Array($0.utf8) }),
                  let sch = a["schema"], text.count >= p.count + x.count, text.starts(with: p), text.reversed().starts(with: x.reversed()) else {
                return false
            }
            return value(text[p.count..<(text.count - x.count)], sch)
        }
    }

    struct Checker {
        let g: JSONGrammar
        let tokens: [[UInt8]]
        let masks: [[ShardMask]]
        let schemaText: [UInt8]
        let schema: JSONValue?
        var round = 0

        init(g: JSONGrammar, tokens: [[UInt8]], masks: [[ShardMask]], schemaText: [UInt8]) {
            (self.g, self.tokens, self.masks, self.schemaText) = (g, tokens, masks, schemaText)
            schema = try? JSONValue.parse(schemaText)
        }

        func fail(_ what: String, _ path: [UInt8]) -> Never {
            preconditionFailure("grammar: \(what), after \(GrammarFuzz.show(path)), schema \(GrammarFuzz.show(schemaText))")
        }

        /// The closing cost's exactness and `isComplete`; returns the accepted next bytes with
        /// the closing cost after each.
        @discardableResult
        func checkState(_ s: JSONState, path: [UInt8]) -> [(UInt8, Int)] {
            var next: [(UInt8, Int)] = []
            for b in 0...255 {
                var t = s
                if g.step(&t, UInt8(b)) { next.append((UInt8(b), g.minClose(t))) }
            }
            let cost = g.minClose(s)
            if cost < 0 { fail("negative closing cost \(cost)", path) }
            if (cost == 0) != g.canEnd(s) { fail("closing cost \(cost) but canEnd \(g.canEnd(s))", path) }
            if cost > 0 && !next.contains(where: { $0.1 == cost - 1 }) {
                fail("closing cost \(cost) but no byte leads to \(cost - 1) (next: \(next.map { "\($0.0):\($0.1)" }))", path)
            }
            if cost == 0, let schema, !GrammarFuzz.outputValid(path, schema: schema) {
                fail("a complete output that is not valid JSON meeting the schema", path)
            }
            if cost == 0 && g.isComplete(s) != next.isEmpty { fail("isComplete \(g.isComplete(s)) disagrees with the next bytes", path) }
            return next
        }

        /// Every sharding's mask against feeding each id's bytes; returns the allowed ids.
        @discardableResult
        mutating func checkMask(_ s: JSONState, path: [UInt8], remaining: Int) -> [Int] {
            let remaining = max(0, remaining)
            var expected: [Int] = []
            for (id, t) in tokens.enumerated() {
                if t.isEmpty {
                    if g.canEnd(s) { expected.append(id) }
                    continue
                }
                var u = s
                if g.feed(&u, t) && g.minClose(u) <= remaining { expected.append(id) }
            }
            for shards in masks {
                let got = shards.flatMap { $0.allowedIds(g, s, remaining: remaining) }
                if got != expected {
                    let extra = Set(got).subtracting(expected).sorted().map { GrammarFuzz.show(tokens[$0]) }
                    let missing = Set(expected).subtracting(got).sorted().map { GrammarFuzz.show(tokens[$0]) }
                    fail("mask over \(shards.map(\.range)) with \(remaining) left allows \(extra), refuses \(missing)", path)
                }
            }
            // `apply` (the engine's call) writes -inf exactly where the ids are refused.
            round += 1
            let shards = masks[round % masks.count]
            for m in shards {
                var row = [Float](repeating: 0, count: m.range.count)
                row.withUnsafeMutableBufferPointer { m.apply(g, s, remaining: remaining, row: $0) }
                for (i, v) in row.enumerated() where (v == 0) != expected.contains(m.range.lowerBound + i) {
                    fail("apply over \(m.range) disagrees at id \(m.range.lowerBound + i)", path)
                }
            }
            return expected
        }
    }
}
