// A small JSON parser that keeps object members as an ordered list of (key, value) with the
// keys' exact Unicode scalars. Foundation's parsers return Swift dictionaries, whose String keys
// compare by canonical equivalence: a tokenizer.json vocab holding both "য়" (U+09DF) and
// "য়" (U+09AF U+09BC) would silently lose one entry. Only what tokenizer.json needs.

/// A parsed JSON value.
public indirect enum JSONValue: Sendable {
    /// Members in file order: `keys[i]` names `values[i]` (parallel arrays: a tuple array
    /// of the enum itself trips the compiler's circularity check).
    case object(keys: [String], values: [JSONValue])
    case array([JSONValue])
    case string(String)
    case number(Double)
    case bool(Bool)
    case null

    /// First member named `key` (exact scalar comparison is irrelevant for ASCII keys).
    public subscript(_ key: String) -> JSONValue? {
        guard case let .object(keys, values) = self, let i = keys.firstIndex(of: key) else { return nil }
        return values[i]
    }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }
    public var int: Int? { if case let .number(d) = self, let i = Int(exactly: d) { return i } else { return nil } }
    public var bool: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    public var array: [JSONValue]? { if case let .array(a) = self { return a } else { return nil } }
    public var members: [(String, JSONValue)]? {
        if case let .object(k, v) = self { return Array(zip(k, v)) } else { return nil }
    }
}

extension JSONValue {
    /// Parses JSON text (members kept in order).
    public static func parse(_ bytes: [UInt8]) throws -> JSONValue { try OrderedJSONParser.parse(bytes) }
}

public struct JSONParseError: Error, CustomStringConvertible {
    let offset: Int
    let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// Recursive-descent parser over UTF-8 bytes.
struct OrderedJSONParser {
    private let b: [UInt8]
    private var i = 0
    private var depth = 0

    static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var p = OrderedJSONParser(b: bytes)
        let v = try p.value()
        p.skipSpace()
        guard p.i == p.b.count else { throw JSONParseError(offset: p.i, reason: "trailing characters") }
        return v
    }

    private init(b: [UInt8]) { self.b = b }

    private mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    private func fail(_ r: String) -> JSONParseError { JSONParseError(offset: i, reason: r) }

    private mutating func value() throws -> JSONValue {
        skipSpace()
        guard i < b.count else { throw fail("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"):
            depth += 1
            defer { depth -= 1 }
            guard depth < 512 else { throw fail("nesting too deep") }
            i += 1
            var keys: [String] = [], values: [JSONValue] = []
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return .object(keys: keys, values: values) }
            while true {
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let k = try string()
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                keys.append(k)
                values.append(try value())
                skipSpace()
                guard i < b.count else { throw fail("unexpected end in object") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return .object(keys: keys, values: values) }
                throw fail("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth < 512 else { throw fail("nesting too deep") }
            i += 1
            var items: [JSONValue] = []
            skipSpace()
            if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                items.append(try value())
                skipSpace()
                guard i < b.count else { throw fail("unexpected end in array") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            let start = i
            while i < b.count, let c = Optional(b[i]), (c >= 0x30 && c <= 0x39) || c == 0x2D || c == 0x2B || c == 0x2E || c == 0x65 || c == 0x45 { i += 1 }
            guard i > start, let d = Double(String(decoding: b[start..<i], as: UTF8.self)) else { throw fail("unexpected character") }
            return .number(d)
        }
    }

    private mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard i + w.count <= b.count, Array(b[i..<(i + w.count)]) == w else { throw fail("expected \(word)") }
        i += w.count
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16) else { throw fail("bad \\u escape") }
        i += 4
        return v
    }

    /// A string literal; `i` is at the opening quote.
    private mutating func string() throws -> String {
        i += 1
        var out: [UInt8] = []
        let start = i
        // Fast path: no escapes.
        while i < b.count, b[i] != UInt8(ascii: "\""), b[i] != UInt8(ascii: "\\") { i += 1 }
        out.append(contentsOf: b[start..<min(i, b.count)])
        while true {
            guard i < b.count else { throw fail("unterminated string") }
            let c = b[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < b.count else { throw fail("unterminated escape") }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var v = try hex4()
                if v >= 0xD800 && v < 0xDC00, i + 6 <= b.count, b[i] == 0x5C, b[i + 1] == UInt8(ascii: "u") {
                    i += 2
                    let lo = try hex4()
                    guard lo >= 0xDC00 && lo < 0xE000 else { throw fail("unpaired surrogate") }
                    v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                }
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(v) ?? "\u{FFFD}")).utf8))
            default: throw fail("bad escape")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension JSONValue {
    /// Compact JSON text, members in their order (enum values and keys are matched byte for byte).
    public static func serialize(_ v: JSONValue) -> [UInt8] {
        var out: [UInt8] = []
        write(v, &out)
        return out
    }

    private static func write(_ v: JSONValue, _ out: inout [UInt8]) {
        switch v {
        case .null: out += Array("null".utf8)
        case let .bool(b): out += Array((b ? "true" : "false").utf8)
        case let .number(d):
            if d.rounded() == d && abs(d) < 1e15 { out += Array(String(Int64(d)).utf8) } else { out += Array("\(d)".utf8) }
        case let .string(s):
            out.append(0x22)
            for b in s.utf8 {
                switch b {
                case 0x22: out += [0x5C, 0x22]
                case 0x5C: out += [0x5C, 0x5C]
                case 0x0A: out += [0x5C, 0x6E]
                case 0x0D: out += [0x5C, 0x72]
                case 0x09: out += [0x5C, 0x74]
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    out += [0x5C, 0x75, 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 15)]]
                default: out.append(b)
                }
            }
            out.append(0x22)
        case let .array(a):
            out.append(0x5B)
            for (i, x) in a.enumerated() { if i > 0 { out.append(0x2C) }; write(x, &out) }
            out.append(0x5D)
        case let .object(keys, values):
            out.append(0x7B)
            for i in keys.indices {
                if i > 0 { out.append(0x2C) }
                write(.string(keys[i]), &out)
                out.append(0x3A)
                write(values[i], &out)
            }
            out.append(0x7D)
        }
    }
}
