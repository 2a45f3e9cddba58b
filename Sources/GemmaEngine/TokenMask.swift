// The constrained-decoding mask on one rank's vocabulary shard (docs/SERVER.md "Structured
// output"): the bytes of every id of the shard in a byte trie; per constrained row, a walk of
// the trie from the automaton's state writes -inf into the logits of every id whose bytes the
// grammar refuses, or after which the output could no longer be closed within the tokens left.
import GemmaTokenizer

/// The text bytes of every id of the vocabulary (markers and control ids: none), the same on
/// every rank. Rank 0 builds it from the tokenizer and broadcasts it once at start-up.
public final class VocabularyBytes: @unchecked Sendable {
    let offsets: [Int]
    let data: [UInt8]

    public var count: Int { offsets.count - 1 }

    public init(_ tokens: [[UInt8]]) {
        var offsets = [0]
        var data: [UInt8] = []
        for t in tokens { data += t; offsets.append(data.count) }
        self.offsets = offsets
        self.data = data
    }

    /// The bytes generated text gets from each id (`GemmaTokenizer.bytes(of:)`, markers empty).
    public convenience init(tokenizer: GemmaTokenizer, vocabSize: Int) {
        self.init((0..<vocabSize).map { id in
            tokenizer.isMarker(Int32(id)) ? [] : tokenizer.bytes(of: Int32(id))
        })
    }

    public func bytes(of id: Int) -> ArraySlice<UInt8> {
        guard id >= 0 && id < count else { return [] }
        return data[offsets[id]..<offsets[id + 1]]
    }

    /// Wire form: u32 count, u32 length per id, then the bytes (little-endian).
    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4 + 4 * count + data.count)
        func u32(_ v: Int) { for k in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
        u32(count)
        for i in 0..<count { u32(offsets[i + 1] - offsets[i]) }
        out += data
        return out
    }

    public static func decode(_ b: [UInt8]) -> VocabularyBytes? {
        func u32(_ at: Int) -> Int? {
            guard at + 4 <= b.count else { return nil }
            return (0..<4).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) }
        }
        guard let n = u32(0), n <= (b.count - 4) / 4 else { return nil }
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(n)
        var at = 4 + 4 * n
        for i in 0..<n {
            guard let len = u32(4 + 4 * i), at + len <= b.count else { return nil }
            tokens.append(Array(b[at..<(at + len)]))
            at += len
        }
        return at == b.count ? VocabularyBytes(tokens) : nil
    }
}

/// A byte trie in preorder: node i has `byte[i]` at `depth[i]` (1-based), its subtree ends
/// before `end[i]`, and the ids whose bytes end there are `ids[idStart[i]..<idStart[i + 1]]`.
/// A walk skips a refused node's whole subtree with one jump.
struct PreorderTrie {
    var byte: [UInt8] = []
    var depth: [Int32] = []
    var end: [Int32] = []
    var idStart: [Int32] = [0]
    var ids: [Int32] = []
    var maxDepth = 0

    init(ids unsorted: [Int], vocab: VocabularyBytes) {
        let sorted = unsorted.sorted { vocab.bytes(of: $0).lexicographicallyPrecedes(vocab.bytes(of: $1)) }
        var open: [Int] = []  // node index per depth - 1 along the current path
        var previous: ArraySlice<UInt8> = []
        for id in sorted {
            let t = vocab.bytes(of: id)
            var lcp = 0
            while lcp < min(t.count, previous.count) && t[t.startIndex + lcp] == previous[previous.startIndex + lcp] { lcp += 1 }
            while open.count > lcp { end[open.removeLast()] = Int32(byte.count) }
            for k in lcp..<t.count {
                open.append(byte.count)
                byte.append(t[t.startIndex + k]); depth.append(Int32(k + 1)); end.append(0)
                idStart.append(Int32(ids.count))
            }
            maxDepth = max(maxDepth, t.count)
            ids.append(Int32(id))
            idStart[byte.count] = Int32(ids.count)
            previous = t
        }
        while let n = open.popLast() { end[n] = Int32(byte.count) }
    }
}

/// One rank's masking tables: its shard's ids split into those that are plain string text
/// (complete UTF-8 characters, no `"`, `\` or control byte: inside a string they leave the
/// automaton where it was) and the rest, each in a preorder trie; ids without bytes apart.
public final class ShardMask: @unchecked Sendable {
    public let range: Range<Int>
    let plainIds: [Int32]
    let plain: PreorderTrie
    let other: PreorderTrie
    let emptyIds: [Int32]
    var allowed: [Bool]

    public init(vocab: VocabularyBytes, range: Range<Int>) {
        self.range = range
        var plainIds: [Int] = [], otherIds: [Int] = [], empty: [Int32] = []
        for id in range.clamped(to: 0..<vocab.count) {
            let b = vocab.bytes(of: id)
            if b.isEmpty { empty.append(Int32(id)) } else if Self.isPlainText(b) { plainIds.append(id) } else { otherIds.append(id) }
        }
        self.plainIds = plainIds.map { Int32($0) }
        plain = PreorderTrie(ids: plainIds, vocab: vocab)
        other = PreorderTrie(ids: otherIds, vocab: vocab)
        emptyIds = empty
        allowed = [Bool](repeating: false, count: range.count)
    }

    /// Complete, strictly valid UTF-8 (the automaton's own rules) with no `"`, `\` or control byte.
    static func isPlainText(_ b: ArraySlice<UInt8>) -> Bool {
        var i = b.startIndex
        while i < b.endIndex {
            let c = b[i]
            if c == 0x22 || c == 0x5C || c < 0x20 { return false }
            var need = 0, lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0..<0x80: need = 0
            case 0xC2...0xDF: need = 1
            case 0xE0: (need, lo) = (2, 0xA0)
            case 0xE1...0xEC, 0xEE, 0xEF: need = 2
            case 0xED: (need, hi) = (2, 0x9F)
            case 0xF0: (need, lo) = (3, 0x90)
            case 0xF1...0xF3: need = 3
            case 0xF4: (need, hi) = (3, 0x8F)
            default: return false
            }
            i += 1
            for k in 0..<need {
                guard i < b.endIndex, b[i] >= (k == 0 ? lo : 0x80), b[i] <= (k == 0 ? hi : 0xBF) else { return false }
                i += 1
            }
        }
        return true
    }

    /// Marks in `allowed` the ids of this shard that may come next: their bytes are accepted
    /// from `state` and leave at most `remaining` bytes to close the value (every byte has a
    /// token of its own, so that many tokens always suffice). Ids without bytes (markers,
    /// end of turn) only where the value is complete. Returns how many ids are allowed.
    @discardableResult
    func computeAllowed(_ g: JSONGrammar, _ state: JSONState, remaining: Int) -> Int {
        for i in allowed.indices { allowed[i] = false }
        var count = 0
        if g.canEnd(state) { for id in emptyIds { allowed[Int(id) - range.lowerBound] = true; count += 1 } }
        if state.isPlainString {
            if g.minClose(state) <= remaining {
                for id in plainIds { allowed[Int(id) - range.lowerBound] = true }
                count += plainIds.count
            }
        } else {
            count += walk(plain, g, state, remaining)
        }
        count += walk(other, g, state, remaining)
        return count
    }

    private func walk(_ t: PreorderTrie, _ g: JSONGrammar, _ start: JSONState, _ remaining: Int) -> Int {
        guard !t.byte.isEmpty else { return 0 }
        var states = [JSONState](repeating: start, count: t.maxDepth + 1)
        var count = 0
        var i = 0
        let n = t.byte.count
        while i < n {
            let d = Int(t.depth[i])
            var s = states[d - 1]
            if !g.step(&s, t.byte[i]) { i = Int(t.end[i]); continue }
            let a = Int(t.idStart[i]), b = Int(t.idStart[i + 1])
            if a < b && g.minClose(s) <= remaining {
                for k in a..<b { allowed[Int(t.ids[k]) - range.lowerBound] = true }
                count += b - a
            }
            states[d] = s
            i += 1
        }
        return count
    }

    /// Writes -inf into `row` (this shard's logits) for every id not allowed.
    public func apply(_ g: JSONGrammar, _ state: JSONState, remaining: Int, row: UnsafeMutableBufferPointer<Float>) {
        computeAllowed(g, state, remaining: remaining)
        for i in 0..<min(row.count, allowed.count) where !allowed[i] { row[i] = -.infinity }
    }

    /// The allowed ids of this shard (tests compare shards with the whole vocabulary).
    public func allowedIds(_ g: JSONGrammar, _ state: JSONState, remaining: Int) -> [Int] {
        computeAllowed(g, state, remaining: remaining)
        return allowed.indices.filter { allowed[$0] }.map { $0 + range.lowerBound }
    }
}
