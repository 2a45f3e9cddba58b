// Structured output (docs/SERVER.md "Structured output"): a JSON Schema subset compiled to a
// pushdown automaton over bytes. Every rank compiles the same schema text (it travels in the
// plan once, when the sequence is admitted) and advances its copy with the sampled ids, which
// every rank knows, so the copies stay identical without further messages.
//
// The automaton accepts a restricted but valid serialisation: no exponent in numbers, at most
// 15 digits before and after the point, at most `maxWhitespace` whitespace bytes (space or
// newline) in a row and only between tokens of the grammar, object keys written exactly as
// `"name"` and, for declared properties, in the schema's order (optional ones may be skipped).
// Everything it accepts parses as JSON and validates against the schema.
import GemmaTokenizer

/// A schema the grammar cannot serve; `keyword` names the offending JSON Schema keyword.
public struct GrammarError: Error, CustomStringConvertible, Equatable, Sendable {
    public var keyword: String
    public var message: String
    public init(keyword: String, _ message: String) { self.keyword = keyword; self.message = message }
    public var description: String { message }
}

/// A compiled schema. Immutable after `init`; shared by the states it creates.
public final class JSONGrammar: @unchecked Sendable {
    /// Most whitespace bytes accepted in a row, so a small model cannot loop on spaces.
    public static let maxWhitespace = 4
    /// Most digits before (and after) a number's decimal point.
    public static let maxDigits = 15
    /// Deepest schema nesting compiled.
    public static let maxDepth = 32
    /// Longest shortest value compiled, in bytes (far beyond any context). Bounding every
    /// node's closing cost keeps the cost arithmetic (items times item length, sums over
    /// required members and over the state's frames) far from overflow: nested arrays with
    /// `minItems` 4096 would otherwise pass 2^63 at the sixth level and trap.
    public static let maxValueLength = 1 << 30
    /// The keywords the compiler reads; annotations it ignores are in `ignoredKeywords`.
    public static let supportedKeywords = ["type", "properties", "required", "additionalProperties", "items",
                                           "minItems", "maxItems", "enum", "const"]
    static let ignoredKeywords: Set<String> = ["title", "description", "$schema", "$comment", "examples", "default"]

    enum Kind { case object, freeObject, array, string, number, integer, literal, choice, tagged }

    struct Prop {
        var key: [UInt8]  // JSON-encoded with its quotes
        var node: Int
        var required: Bool
    }

    struct Trie {
        var children: [[(UInt8, Int32)]] = [[]]
        var terminal: [Int32] = [-1]
        var depth: [Int] = [0]
        var members: [[Int32]] = [[]]
        var minRemaining: [Int] = [Int.max]

        func child(_ n: Int, _ b: UInt8) -> Int? {
            for (c, i) in children[n] where c == b { return Int(i) }
            return nil
        }

        mutating func insert(_ bytes: [UInt8], value: Int32) {
            var n = 0
            members[0].append(value)
            for b in bytes {
                if let c = child(n, b) { n = c } else {
                    children.append([]); terminal.append(-1); depth.append(depth[n] + 1); members.append([]); minRemaining.append(Int.max)
                    children[n].append((b, Int32(children.count - 1)))
                    n = children.count - 1
                }
                members[n].append(value)
            }
            if terminal[n] < 0 { terminal[n] = value }
        }

        /// Fewest bytes from each node to a terminal.
        mutating func finish() {
            for n in stride(from: children.count - 1, through: 0, by: -1) {
                var m = terminal[n] >= 0 ? 0 : Int.max
                for (_, c) in children[n] where minRemaining[Int(c)] != Int.max { m = min(m, minRemaining[Int(c)] + 1) }
                minRemaining[n] = m
            }
        }
    }

    struct Node {
        var kind: Kind
        var minLen = 0
        var props: [Prop] = []
        var keyTrie = Trie()
        /// Per prop index i: index of the first required prop >= i (props.count if none).
        var nextRequired: [Int] = []
        /// closeFrom[i]: bytes to close the object after a complete member when the next
        /// candidate is prop i (every required prop >= i, each after a comma, then "}").
        var closeFrom: [Int] = []
        var items = -1
        var minItems = 0
        var maxItems = Int.max
        var trie = Trie()
        var dispatch: [Int32] = []
        /// `.tagged`: per branch (the trie's terminal value) the value's node and the suffix.
        var branches: [(node: Int, suffix: [UInt8])] = []
        /// `.tagged`: per trie node, the fewest bytes to finish from there (prefix, value, suffix).
        var trieCost: [Int] = []
    }

    var nodes: [Node] = []
    public let root: Int
    var anyNode = -1

    /// The root-only wrapper of tagged alternatives (`JSONGrammar.tagged`), accepted only when
    /// `allowTagged` (the server builds it for forced tool calls; `response_format` refuses it).
    public static let taggedKeyword = "x-gemma-tagged"

    /// Compiles a schema (a parsed JSON object). `nil` means `{"type":"object"}` (JSON mode).
    /// With `allowTagged`, a root `{"x-gemma-tagged": [{"prefix", "schema", "suffix"}, ...]}`
    /// is compiled as: one of the prefixes (literal bytes, no two alike; one may be a prefix
    /// of another when the longer one's next byte cannot start the shorter one's value), then a
    /// value of that alternative's schema (whitespace may precede it), then its suffix.
    public init(schema: JSONValue?, allowTagged: Bool = false) throws {
        root = 0
        nodes.append(Node(kind: .string))  // placeholder for the root, replaced below
        let s = schema ?? .object(keys: ["type"], values: [.string("object")])
        let r: Int
        if allowTagged, let alternatives = s[Self.taggedKeyword] {
            r = try compileTagged(alternatives)
        } else {
            r = try compile(s, depth: 0)
        }
        nodes[0] = nodes[r]
    }

    /// Compiles the schema text carried by the plan (tagged alternatives allowed: rank 0 has
    /// checked what a client sent before it reached a plan).
    public convenience init(schemaText: [UInt8]) throws {
        let v: JSONValue
        do { v = try JSONValue.parse(schemaText) } catch {
            throw GrammarError(keyword: "schema", "response_format: the schema is not valid JSON: \(error)")
        }
        try self.init(schema: v, allowTagged: true)
    }

    /// The wrapper text for `init(schema:allowTagged:)`: alternatives of (prefix, schema, suffix).
    public static func tagged(_ alternatives: [(prefix: String, schema: JSONValue, suffix: String)]) -> JSONValue {
        .object(keys: [taggedKeyword], values: [.array(alternatives.map {
            .object(keys: ["prefix", "schema", "suffix"], values: [.string($0.prefix), $0.schema, .string($0.suffix)])
        })])
    }

    private func compileTagged(_ list: JSONValue) throws -> Int {
        guard let alternatives = list.array, !alternatives.isEmpty else {
            throw GrammarError(keyword: Self.taggedKeyword, "\(Self.taggedKeyword) must be a non-empty list")
        }
        var node = Node(kind: .tagged)
        var prefixes: [([UInt8], Int)] = []
        for a in alternatives {
            guard let prefix = a["prefix"]?.string, !prefix.isEmpty, let suffix = a["suffix"]?.string, let schema = a["schema"] else {
                throw GrammarError(keyword: Self.taggedKeyword, "\(Self.taggedKeyword): each alternative needs a non-empty \"prefix\", a \"schema\" and a \"suffix\"")
            }
            let p = Array(prefix.utf8)
            let child = try compile(schema, depth: 1)
            // The suffix must not start with a byte that could still extend the value (a digit
            // after a number, a longer enum literal): that byte would go to the value, and the
            // closing cost, which counts the suffix from there, could not be met.
            if let first = suffix.utf8.first, extendingBytes(child).contains(first) {
                throw GrammarError(keyword: Self.taggedKeyword, "\(Self.taggedKeyword): suffix \"\(suffix)\" starts with a byte that can continue the value before it")
            }
            for (q, other) in prefixes {
                let (short, long, shortNode) = q.count <= p.count ? (q, p, other) : (p, q, child)
                guard long.starts(with: short) else { continue }
                if short.count == long.count || Self.isWS(long[short.count]) || firstBytes(shortNode).contains(long[short.count]) {
                    throw GrammarError(keyword: Self.taggedKeyword, "\(Self.taggedKeyword): prefix \"\(prefix)\" clashes with another")
                }
            }
            prefixes.append((p, child))
            node.trie.insert(p, value: Int32(node.branches.count))
            node.branches.append((child, Array(suffix.utf8)))
        }
        node.trie.finish()
        var cost = [Int](repeating: Int.max, count: node.trie.children.count)
        for n in stride(from: cost.count - 1, through: 0, by: -1) {
            let t = node.trie.terminal[n]
            if t >= 0 { let b = node.branches[Int(t)]; cost[n] = nodes[b.node].minLen + b.suffix.count }
            for (_, c) in node.trie.children[n] where cost[Int(c)] != Int.max { cost[n] = min(cost[n], cost[Int(c)] + 1) }
        }
        node.trieCost = cost
        node.minLen = cost[0]
        return add(node)
    }

    /// Fewest bytes of any value the schema accepts.
    public var minimumLength: Int { nodes[root].minLen }

    // MARK: Compilation

    private func add(_ n: Node) -> Int { nodes.append(n); return nodes.count - 1 }

    private func any() -> Int {
        if anyNode >= 0 { return anyNode }
        anyNode = add(Node(kind: .choice, minLen: 1))
        let obj = add(Node(kind: .freeObject, minLen: 2, items: anyNode))
        let arr = add(Node(kind: .array, minLen: 2, items: anyNode))
        let str = add(Node(kind: .string, minLen: 2))
        let num = add(Node(kind: .number, minLen: 1))
        let lit = literal([.bool(true), .bool(false), .null])
        nodes[anyNode].dispatch = dispatchTable([obj, arr, str, num, lit])
        return anyNode
    }

    private func literal(_ values: [JSONValue]) -> Int {
        var t = Trie()
        for (i, v) in values.enumerated() { t.insert(JSONValue.serialize(v), value: Int32(i)) }
        t.finish()
        return add(Node(kind: .literal, minLen: t.minRemaining[0], trie: t))
    }

    private func firstBytes(_ n: Int) -> [UInt8] {
        switch nodes[n].kind {
        case .object, .freeObject: return [0x7B]
        case .array: return [0x5B]
        case .string: return [0x22]
        case .number, .integer: return [0x2D] + Array(0x30...0x39)
        case .literal, .tagged: return nodes[n].trie.children[0].map(\.0)
        case .choice: return (0..<256).filter { nodes[n].dispatch[$0] >= 0 }.map { UInt8($0) }
        }
    }

    /// Bytes that can continue a complete value of node `n` (numbers and literals only; the
    /// other values end with a byte of their own).
    private func extendingBytes(_ n: Int) -> Set<UInt8> {
        let node = nodes[n]
        switch node.kind {
        case .number: return Set(Array(0x30...0x39) + [0x2E])
        case .integer: return Set(0x30...0x39)
        case .literal:
            var out = Set<UInt8>()
            for t in node.trie.children.indices where node.trie.terminal[t] >= 0 { for (b, _) in node.trie.children[t] { out.insert(b) } }
            return out
        case .choice:
            return Set(node.dispatch.filter { $0 >= 0 }).reduce(into: Set<UInt8>()) { $0.formUnion(extendingBytes(Int($1))) }
        default: return []
        }
    }

    private func dispatchTable(_ alternatives: [Int]) -> [Int32] {
        var table = [Int32](repeating: -1, count: 256)
        for a in alternatives { for b in firstBytes(a) where table[Int(b)] < 0 { table[Int(b)] = Int32(a) } }
        return table
    }

    private func compile(_ schema: JSONValue, depth: Int) throws -> Int {
        guard depth <= Self.maxDepth else {
            throw GrammarError(keyword: "schema", "response_format: the schema is nested deeper than \(Self.maxDepth) levels")
        }
        if case .bool(true) = schema { return any() }
        guard let members = schema.members else {
            throw GrammarError(keyword: "schema", "response_format: a schema must be a JSON object")
        }
        for (k, _) in members where !Self.supportedKeywords.contains(k) && !Self.ignoredKeywords.contains(k) {
            throw GrammarError(keyword: k, "response_format: JSON Schema keyword \"\(k)\" is not supported "
                               + "(supported: \(Self.supportedKeywords.joined(separator: ", ")))")
        }
        var types: [String]?
        if let t = schema["type"] {
            if let s = t.string { types = [s] } else if let a = t.array, !a.isEmpty, a.allSatisfy({ $0.string != nil }) {
                types = a.compactMap(\.string)
            } else {
                throw GrammarError(keyword: "type", "response_format: \"type\" must be a type name or a non-empty list of them")
            }
            let known: Set<String> = ["object", "array", "string", "number", "integer", "boolean", "null"]
            for n in types! where !known.contains(n) {
                throw GrammarError(keyword: "type", "response_format: unknown type \"\(n)\"")
            }
        }
        var values: [JSONValue]?
        if let c = schema["const"] { values = [c] }
        if let e = schema["enum"] {
            guard let a = e.array, !a.isEmpty else {
                throw GrammarError(keyword: "enum", "response_format: \"enum\" must be a non-empty list")
            }
            values = values.map { c in c.filter { v in a.contains { JSONValue.serialize($0) == JSONValue.serialize(v) } } } ?? a
        }
        if var values {
            if let types { values = values.filter { v in types.contains { Self.matches(v, type: $0) } } }
            guard !values.isEmpty else {
                throw GrammarError(keyword: schema["enum"] != nil ? "enum" : "const",
                                   "response_format: no value of \"enum\"/\"const\" matches the schema's type")
            }
            return literal(values)
        }
        let objectish = schema["properties"] != nil || schema["required"] != nil || schema["additionalProperties"] != nil
        let arrayish = schema["items"] != nil || schema["minItems"] != nil || schema["maxItems"] != nil
        let list = types ?? (objectish ? ["object"] : arrayish ? ["array"] : [])
        if list.isEmpty { return any() }
        var alternatives: [Int] = []
        for t in list where !(t == "integer" && list.contains("number")) {
            switch t {
            case "object": alternatives.append(try compileObject(schema, depth: depth))
            case "array": alternatives.append(try compileArray(schema, depth: depth))
            case "string": alternatives.append(add(Node(kind: .string, minLen: 2)))
            case "number": alternatives.append(add(Node(kind: .number, minLen: 1)))
            case "integer": alternatives.append(add(Node(kind: .integer, minLen: 1)))
            case "boolean": alternatives.append(literal([.bool(true), .bool(false)]))
            default: alternatives.append(literal([.null]))
            }
        }
        if alternatives.count == 1 { return alternatives[0] }
        let table = dispatchTable(alternatives)
        return add(Node(kind: .choice, minLen: alternatives.map { nodes[$0].minLen }.min()!, dispatch: table))
    }

    public static func matches(_ v: JSONValue, type: String) -> Bool {
        switch (type, v) {
        case ("object", .object), ("array", .array), ("string", .string), ("number", .number),
             ("boolean", .bool), ("null", .null): return true
        case let ("integer", .number(d)): return d.rounded() == d
        default: return false
        }
    }

    private func compileObject(_ schema: JSONValue, depth: Int) throws -> Int {
        // `additionalProperties: false`: no name outside `properties` (so not `{}`'s free
        // members, and not a `required` name that `properties` lacks: no value meets that).
        var closed = false
        if let ap = schema["additionalProperties"] {
            switch ap {
            case .bool(false): closed = true
            case .bool(true) where schema["properties"] == nil && schema["required"] == nil: break
            default:
                throw GrammarError(keyword: "additionalProperties",
                                   "response_format: \"additionalProperties\" must be false or absent when properties are given (true only without properties; schemas are not supported)")
            }
        }
        var names: [String] = []
        var schemas: [JSONValue] = []
        if let p = schema["properties"] {
            guard let m = p.members else {
                throw GrammarError(keyword: "properties", "response_format: \"properties\" must be an object")
            }
            for (k, v) in m where !names.contains(k) { names.append(k); schemas.append(v) }
        }
        var required: Set<String> = []
        if let r = schema["required"] {
            guard let a = r.array, a.allSatisfy({ $0.string != nil }) else {
                throw GrammarError(keyword: "required", "response_format: \"required\" must be a list of property names")
            }
            for name in a.compactMap(\.string) {
                required.insert(name)
                if !names.contains(name) {
                    guard !closed else {
                        throw GrammarError(keyword: "required", "response_format: required property \"\(name)\" is not in \"properties\" "
                                           + "and \"additionalProperties\" is false, so no value meets the schema")
                    }
                    names.append(name); schemas.append(.bool(true))
                }
            }
        }
        // No names: any members, or none at all when closed (an object node without props).
        if names.isEmpty && !closed { return add(Node(kind: .freeObject, minLen: 2, items: any())) }
        var node = Node(kind: .object)
        for (name, s) in zip(names, schemas) {
            let child = try compile(s, depth: depth + 1)
            node.props.append(Prop(key: JSONValue.serialize(.string(name)), node: child, required: required.contains(name)))
        }
        for (i, p) in node.props.enumerated() { node.keyTrie.insert(p.key, value: Int32(i)) }
        node.keyTrie.finish()
        let n = node.props.count
        node.nextRequired = [Int](repeating: n, count: n + 1)
        node.closeFrom = [Int](repeating: 1, count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            let p = node.props[i]
            node.nextRequired[i] = p.required ? i : node.nextRequired[i + 1]
            node.closeFrom[i] = node.closeFrom[i + 1] + (p.required ? 1 + entryLength(p) : 0)
            guard node.closeFrom[i] <= Self.maxValueLength else { throw tooLong("required") }
        }
        let idx = add(node)
        nodes[idx].minLen = 1 + objectCost(idx, phase: 0, a: 0, b: 0)
        return idx
    }

    private func tooLong(_ keyword: String) -> GrammarError {
        GrammarError(keyword: keyword, "response_format: the shortest value the schema allows is longer than \(Self.maxValueLength) bytes")
    }

    private func entryLength(_ p: Prop) -> Int { p.key.count + 1 + nodes[p.node].minLen }

    private func compileArray(_ schema: JSONValue, depth: Int) throws -> Int {
        func count(_ k: String) throws -> Int? {
            guard let v = schema[k] else { return nil }
            guard let i = v.int, i >= 0 else {
                throw GrammarError(keyword: k, "response_format: \"\(k)\" must be a non-negative integer")
            }
            return i
        }
        let minItems = try count("minItems") ?? 0
        let maxItems = try count("maxItems") ?? Int.max
        guard minItems <= maxItems else {
            throw GrammarError(keyword: "minItems", "response_format: \"minItems\" \(minItems) is above \"maxItems\" \(maxItems)")
        }
        guard minItems <= 4096 else {
            throw GrammarError(keyword: "minItems", "response_format: \"minItems\" above 4096 is not supported")
        }
        let items = try schema["items"].map { try compile($0, depth: depth + 1) } ?? any()
        let idx = add(Node(kind: .array, items: items, minItems: minItems, maxItems: maxItems))
        // At most 4096 * (2^30 + 1) + 4097: no overflow, then bounded again.
        nodes[idx].minLen = 1 + arrayCost(idx, phase: 0, count: 0)
        guard nodes[idx].minLen <= Self.maxValueLength else { throw tooLong("minItems") }
        return idx
    }

    // MARK: Closing costs

    func objectCost(_ n: Int, phase: UInt8, a: Int32, b: Int32) -> Int {
        let node = nodes[n]
        let b = Int(b)
        switch phase {
        case 0: return node.nextRequired[0] < node.props.count ? node.closeFrom[0] - 1 : 1
        case 1:
            var best = Int.max
            let upper = node.nextRequired[b]
            for j in node.keyTrie.members[Int(a)] where Int(j) >= b && Int(j) <= upper {
                let p = node.props[Int(j)]
                best = min(best, p.key.count - node.keyTrie.depth[Int(a)] + 1 + nodes[p.node].minLen + node.closeFrom[Int(j) + 1])
            }
            return best
        case 2:
            let p = node.props[Int(a)]
            return 1 + nodes[p.node].minLen + node.closeFrom[Int(a) + 1]
        case 3: return node.closeFrom[b]
        default:
            var best = Int.max
            let upper = min(node.nextRequired[b], node.props.count - 1)
            if b <= upper {
                for j in b...upper { best = min(best, entryLength(node.props[j]) + node.closeFrom[j + 1]) }
            }
            return best
        }
    }

    func arrayCost(_ n: Int, phase: UInt8, count c: Int32) -> Int {
        let node = nodes[n]
        let m = nodes[node.items].minLen
        switch phase {
        case 0: return node.minItems == 0 ? 1 : node.minItems * m + node.minItems
        case 3: return max(0, node.minItems - Int(c)) * (1 + m) + 1
        default: return m + (max(1, node.minItems - Int(c)) - 1) * (1 + m) + 1
        }
    }

    // MARK: Running

    /// The state before any byte.
    public func start() -> JSONState {
        // Tagged alternatives start with their prefix at once (no whitespace before it).
        JSONState(below: [JSONState.Frame(tag: .root, phase: 1, node: Int32(root))],
                  top: JSONState.Frame(tag: nodes[root].kind == .tagged ? .tagged : .value, phase: 0, node: Int32(root)), ws: 0)
    }

    /// Fewest bytes that complete a valid value from `s`.
    public func minClose(_ s: JSONState) -> Int {
        var total = frameCost(s.top)
        for f in s.below { total += frameCost(f) }
        return total
    }

    func frameCost(_ f: JSONState.Frame) -> Int {
        let n = Int(f.node)
        switch f.tag {
        case .root: return 0
        case .value: return nodes[n].minLen
        case .object: return objectCost(n, phase: f.phase, a: f.a, b: f.b)
        case .freeObject:
            switch f.phase { case 0, 3: return 1; case 2: return 3; default: return 5 }
        case .array: return arrayCost(n, phase: f.phase, count: f.a)
        case .string:
            switch f.phase {
            case 0: return 1
            case 1: return 2
            case 11...14: return Int(f.phase) - 10 + 1
            default: return Int(f.a) + 1
            }
        case .number: return f.phase == 1 || f.phase == 4 || f.phase == 0 ? 1 : 0
        case .literal: return nodes[n].trie.minRemaining[Int(f.a)]
        case .tagged: return f.phase == 0 ? nodes[n].trieCost[Int(f.a)] : nodes[n].branches[Int(f.b)].suffix.count - Int(f.a)
        }
    }

    /// Whether the bytes so far are a complete value (more may still extend a number or literal).
    public func canEnd(_ s: JSONState) -> Bool {
        if s.top.tag == .root { return true }
        return s.below.count == 1 && topEndable(s)
    }

    /// A complete value that no byte can extend: the sequence is finished.
    public func isComplete(_ s: JSONState) -> Bool {
        guard canEnd(s) else { return false }
        for b in 0...255 {
            var t = s
            if step(&t, UInt8(b)) { return false }
        }
        return true
    }

    /// Feeds `bytes`; false (and `s` unspecified) when the grammar refuses them.
    public func feed(_ s: inout JSONState, _ bytes: some Sequence<UInt8>) -> Bool {
        for b in bytes where !step(&s, b) { return false }
        return true
    }

    /// Whether `bytes` (from the start) are a prefix the grammar accepts.
    public func accepts(prefix bytes: [UInt8]) -> Bool {
        var s = start()
        return feed(&s, bytes)
    }

    /// Whether `bytes` are a complete accepted value.
    public func accepts(_ bytes: [UInt8]) -> Bool {
        var s = start()
        return feed(&s, bytes) && canEnd(s)
    }

    @inline(__always) static func isWS(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A }
    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    private func pop(_ s: inout JSONState) {
        s.top = s.below.removeLast()
    }

    private func push(_ s: inout JSONState, _ f: JSONState.Frame) {
        s.below.append(s.top)
        s.top = f
    }

    /// Consumes one byte.
    public func step(_ s: inout JSONState, _ b: UInt8) -> Bool {
        if Self.isWS(b) {
            if s.wsAllowed {
                guard s.ws < Self.maxWhitespace else { return false }
                s.ws += 1
                return true
            }
            if topEndable(s) {  // whitespace ends a number or literal inside a container
                pop(&s)
                return step(&s, b)
            }
            return stepNonWS(&s, b)  // a space inside a string is text
        }
        s.ws = 0
        return stepNonWS(&s, b)
    }

    private func topEndable(_ s: JSONState) -> Bool {
        switch s.top.tag {
        case .number: return s.top.phase == 2 || s.top.phase == 3 || s.top.phase == 5
        case .literal: return nodes[Int(s.top.node)].trie.terminal[Int(s.top.a)] >= 0
        default: return false
        }
    }

    private func stepNonWS(_ s: inout JSONState, _ b: UInt8) -> Bool {
        var f = s.top
        let n = Int(f.node)
        switch f.tag {
        case .root:
            return false
        case .tagged:
            let node = nodes[n]
            if f.phase == 1 {  // the suffix, byte by byte
                guard node.branches[Int(f.b)].suffix[Int(f.a)] == b else { return false }
                s.top.a += 1
                if Int(s.top.a) == node.branches[Int(f.b)].suffix.count { pop(&s) }
                return true
            }
            return taggedAdvance(&s, node: n, from: Int(f.a), b)
        case .value:
            return begin(&s, node: n, b)
        case .string:
            switch f.phase {
            case 0:
                if b == 0x22 { pop(&s); return true }
                if b == 0x5C { s.top.phase = 1; return true }
                if b < 0x20 { return false }
                if b < 0x80 { return true }
                let need: Int32, lo: UInt8, hi: UInt8
                switch b {
                case 0xC2...0xDF: (need, lo, hi) = (1, 0x80, 0xBF)
                case 0xE0: (need, lo, hi) = (2, 0xA0, 0xBF)
                case 0xE1...0xEC, 0xEE, 0xEF: (need, lo, hi) = (2, 0x80, 0xBF)
                case 0xED: (need, lo, hi) = (2, 0x80, 0x9F)
                case 0xF0: (need, lo, hi) = (3, 0x90, 0xBF)
                case 0xF1...0xF3: (need, lo, hi) = (3, 0x80, 0xBF)
                case 0xF4: (need, lo, hi) = (3, 0x80, 0x8F)
                default: return false
                }
                s.top.phase = 20; s.top.a = need; s.top.b = Int32(lo) << 8 | Int32(hi)
                return true
            case 1:
                switch b {
                case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74: s.top.phase = 0; return true
                case 0x75: s.top.phase = 14; return true
                default: return false
                }
            case 11...14:
                let hex = Self.isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
                guard hex else { return false }
                s.top.phase = f.phase == 11 ? 0 : f.phase - 1
                return true
            default:
                guard Int32(b) >= f.b >> 8 && Int32(b) <= f.b & 0xFF else { return false }
                f.a -= 1
                if f.a == 0 { f.phase = 0 } else { f.b = 0x80BF }
                s.top = f
                return true
            }
        case .number:
            let integer = nodes[n].kind == .integer
            switch f.phase {
            case 0:
                if b == 0x2D { f.phase = 1 } else if b == 0x30 { f.phase = 2 } else if Self.isDigit(b) { f.phase = 3; f.a = 1 } else { return false }
            case 1:
                if b == 0x30 { f.phase = 2 } else if Self.isDigit(b) { f.phase = 3; f.a = 1 } else { return false }
            case 2, 3:
                if f.phase == 3 && Self.isDigit(b) && f.a < Self.maxDigits { f.a += 1 }
                else if b == 0x2E && !integer { f.phase = 4 }
                else { pop(&s); return step(&s, b) }
            case 4:
                guard Self.isDigit(b) else { return false }
                f.phase = 5; f.b = 1
            default:
                if Self.isDigit(b) && f.b < Self.maxDigits { f.b += 1 } else { pop(&s); return step(&s, b) }
            }
            s.top = f
            return true
        case .literal:
            if let c = nodes[n].trie.child(Int(f.a), b) { s.top.a = Int32(c); return true }
            guard nodes[n].trie.terminal[Int(f.a)] >= 0 else { return false }
            pop(&s)
            return step(&s, b)
        case .array:
            let node = nodes[n]
            switch f.phase {
            case 0, 4:
                if f.phase == 0 && b == 0x5D {
                    guard node.minItems == 0 else { return false }
                    pop(&s); return true
                }
                guard Int(f.a) < node.maxItems else { return false }
                s.top.phase = 3; s.top.a += 1
                push(&s, JSONState.Frame(tag: .value, phase: 0, node: Int32(node.items)))
                return begin(&s, node: node.items, b)
            default:
                if b == 0x2C && Int(f.a) < node.maxItems { s.top.phase = 4; return true }
                if b == 0x5D && Int(f.a) >= node.minItems { pop(&s); return true }
                return false
            }
        case .freeObject:
            switch f.phase {
            case 0, 4:
                if f.phase == 0 && b == 0x7D { pop(&s); return true }
                guard b == 0x22 else { return false }
                s.top.phase = 2
                push(&s, JSONState.Frame(tag: .string, phase: 0, node: 0))
                return true
            case 2:
                guard b == 0x3A else { return false }
                s.top.phase = 3
                push(&s, JSONState.Frame(tag: .value, phase: 0, node: Int32(nodes[n].items)))
                return true
            default:
                if b == 0x2C { s.top.phase = 4; return true }
                if b == 0x7D { pop(&s); return true }
                return false
            }
        case .object:
            let node = nodes[n]
            let lowest = Int(f.b)
            let upper = node.nextRequired[min(lowest, node.props.count)]
            func inRange(_ t: Int) -> Bool {
                node.keyTrie.members[t].contains { Int($0) >= lowest && Int($0) <= upper }
            }
            switch f.phase {
            case 0, 4:
                if f.phase == 0 && b == 0x7D {
                    guard upper >= node.props.count else { return false }
                    pop(&s); return true
                }
                guard let c = node.keyTrie.child(0, b), inRange(c) else { return false }
                s.top.phase = 1; s.top.a = Int32(c)
                return true
            case 1:
                guard let c = node.keyTrie.child(Int(f.a), b), inRange(c) else { return false }
                let t = node.keyTrie.terminal[c]
                if t >= 0 && node.keyTrie.children[c].isEmpty { s.top.phase = 2; s.top.a = t } else { s.top.a = Int32(c) }
                return true
            case 2:
                guard b == 0x3A else { return false }
                s.top.phase = 3; s.top.b = f.a + 1
                push(&s, JSONState.Frame(tag: .value, phase: 0, node: Int32(node.props[Int(f.a)].node)))
                return true
            default:
                if b == 0x2C && lowest < node.props.count { s.top.phase = 4; return true }
                if b == 0x7D && upper >= node.props.count { pop(&s); return true }
                return false
            }
        }
    }

    /// Starts a value of `node` with its first byte (the top frame is that value's frame).
    private func begin(_ s: inout JSONState, node n: Int, _ b: UInt8) -> Bool {
        let node = nodes[n]
        switch node.kind {
        case .choice:
            let c = node.dispatch[Int(b)]
            guard c >= 0 else { return false }
            return begin(&s, node: Int(c), b)
        case .object, .freeObject:
            guard b == 0x7B else { return false }
            s.top = JSONState.Frame(tag: node.kind == .object ? .object : .freeObject, phase: 0, node: Int32(n))
            return true
        case .array:
            guard b == 0x5B else { return false }
            s.top = JSONState.Frame(tag: .array, phase: 0, node: Int32(n))
            return true
        case .string:
            guard b == 0x22 else { return false }
            s.top = JSONState.Frame(tag: .string, phase: 0, node: Int32(n))
            return true
        case .number, .integer:
            s.top = JSONState.Frame(tag: .number, phase: 0, node: Int32(n))
            return stepNonWS(&s, b)
        case .literal:
            guard let c = node.trie.child(0, b) else { return false }
            s.top = JSONState.Frame(tag: .literal, phase: 0, node: Int32(n), a: Int32(c))
            return true
        case .tagged:
            return taggedAdvance(&s, node: n, from: 0, b)
        }
    }

    /// One byte of a tagged node's prefix; the prefix's last byte starts the branch's value
    /// (the tagged frame stays below it for the suffix, or is replaced when there is none).
    private func taggedAdvance(_ s: inout JSONState, node n: Int, from t: Int, _ b: UInt8) -> Bool {
        let node = nodes[n]
        guard let c = node.trie.child(t, b) else {
            // A complete prefix that a longer one extends: a byte off the trie starts the value.
            guard t > 0, node.trie.terminal[t] >= 0 else { return false }
            enterBranch(&s, node: n, branch: node.trie.terminal[t])
            return step(&s, b)
        }
        let branch = node.trie.terminal[c]
        guard branch >= 0, node.trie.children[c].isEmpty else {
            s.top = JSONState.Frame(tag: .tagged, phase: 0, node: Int32(n), a: Int32(c))
            return true
        }
        enterBranch(&s, node: n, branch: branch)
        return true
    }

    private func enterBranch(_ s: inout JSONState, node n: Int, branch: Int32) {
        let node = nodes[n]
        let value = JSONState.Frame(tag: .value, phase: 0, node: Int32(node.branches[Int(branch)].node))
        if node.branches[Int(branch)].suffix.isEmpty {
            s.top = value
        } else {
            s.top = JSONState.Frame(tag: .tagged, phase: 1, node: Int32(n), a: 0, b: branch)
            push(&s, value)
        }
    }
}

/// Where the automaton is: the container frames below and the frame being lexed on top (kept
/// apart so most bytes change only `top`, which copies no array).
public struct JSONState: Equatable, Sendable {
    enum Tag: UInt8 { case root, value, object, freeObject, array, string, number, literal, tagged }

    struct Frame: Equatable, Sendable {
        var tag: Tag
        var phase: UInt8
        var node: Int32
        var a: Int32 = 0
        var b: Int32 = 0
    }

    var below: [Frame]
    var top: Frame
    var ws: Int

    /// Inside an unescaped string with no character half-written: any complete character but
    /// `"`, `\` and controls leaves the state as it is (the mask's fast path).
    public var isPlainString: Bool { top.tag == .string && top.phase == 0 }

    /// Whether whitespace may come next.
    var wsAllowed: Bool {
        switch top.tag {
        case .value: return true
        case .object, .freeObject: return top.phase != 1
        case .array: return true
        default: return false
        }
    }
}
