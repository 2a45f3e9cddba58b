// Gemma's tokenizer: SentencePiece-style BPE with byte fallback over a fixed vocabulary.
// Encoding follows llama.cpp's SPM path (the reference we test against): special-token markup
// is split out first, spaces become "▁", then pairs merge by the merged piece's score (or, for
// a tokenizer.json vocabulary, by merge rank as Hugging Face `tokenizers` does), and leftover
// characters fall back to `<0xXX>` byte tokens. Loading from files lives in TokenizerLoading.swift.
import Foundation

/// SentencePiece / GGUF token types (same numbering in both).
public enum TokenType: Int32, Sendable {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// Errors building or using a tokenizer.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case invalidVocabulary(source: String, reason: String)
    case unreadable(file: String, reason: String)
    case tokenOutOfRange(id: Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case let .invalidVocabulary(s, r): return "\(s): invalid tokenizer vocabulary: \(r)"
        case let .unreadable(f, r): return "cannot read tokenizer \(f): \(r)"
        case let .tokenOutOfRange(id, n): return "token id \(id) is outside the vocabulary (0..<\(n))"
        }
    }
}

/// How adjacent symbols are chosen for merging.
public enum MergeRule: Sendable {
    /// SentencePiece / llama.cpp SPM: any adjacent pair whose concatenation is a piece may
    /// merge; the highest-scoring merged piece goes first, ties to the leftmost pair.
    case scores
    /// Hugging Face BPE: only listed merges, lowest rank first, ties to the leftmost pair.
    /// Keys pack (left id << 32 | right id); values are (rank, merged id).
    case merges([UInt64: MergeEntry])
}

/// One rule of `MergeRule.merges`.
public struct MergeEntry: Sendable {
    public let rank: Int32
    public let result: Int32
    public init(rank: Int32, result: Int32) { self.rank = rank; self.result = result }
}

/// A loaded vocabulary with the encode / decode algorithms. Immutable and thread-safe.
public final class GemmaTokenizer: Sendable {
    /// Piece text per id, as the source stores it (e.g. "▁the", "<0x0A>", "\n\n").
    public let pieces: [String]
    /// Piece score per id (SentencePiece log-probability-like; higher merges first).
    public let scores: [Float]
    public let types: [TokenType]
    public let mergeRule: MergeRule
    public let bosID: Int32?
    public let eosID: Int32?
    public let unknownID: Int32?
    /// Whether `encode(addSpecial: true)` prepends BOS / appends EOS (the model's own setting).
    public let addBOS: Bool
    public let addEOS: Bool
    /// SentencePiece "add dummy prefix": a space before the first text of the prompt (off for Gemma).
    public let addSpacePrefix: Bool

    private let table: PieceTable
    private let byteTokens: [Int32]  // 256 entries; -1 when the vocab lacks one
    private let special: SpecialMatcher
    private let specialNoControl: SpecialMatcher

    /// Number of tokens.
    public var count: Int { pieces.count }

    /// Builds a tokenizer. `pieces`, `scores` and `types` must have one entry per id.
    public init(pieces: [String], scores: [Float], types: [TokenType], mergeRule: MergeRule = .scores,
                bosID: Int32?, eosID: Int32?, unknownID: Int32?, addBOS: Bool, addEOS: Bool,
                addSpacePrefix: Bool = false, source: String) throws {
        guard !pieces.isEmpty else { throw TokenizerError.invalidVocabulary(source: source, reason: "no tokens") }
        guard scores.count == pieces.count, types.count == pieces.count else {
            throw TokenizerError.invalidVocabulary(source: source, reason: "\(pieces.count) tokens but \(scores.count) scores and \(types.count) types")
        }
        for (name, id) in [("BOS", bosID), ("EOS", eosID), ("unknown", unknownID)] {
            if let id, id < 0 || Int(id) >= pieces.count {
                throw TokenizerError.invalidVocabulary(source: source, reason: "\(name) id \(id) outside 0..<\(pieces.count)")
            }
        }
        self.pieces = pieces
        self.scores = scores
        self.types = types
        self.mergeRule = mergeRule
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.addSpacePrefix = addSpacePrefix
        let table = PieceTable(pieces: pieces)
        self.table = table
        var bt = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = table.id(of: String(format: "<0x%02X>", b).utf8) { bt[b] = id }
            else if b < 0x80, let id = table.id(of: CollectionOfOne(UInt8(b))) { bt[b] = id }
        }
        byteTokens = bt
        // llama.cpp's special-token cache: CONTROL, USER_DEFINED and UNKNOWN pieces.
        var all: [Int32] = [], userDefined: [Int32] = []
        for (i, t) in types.enumerated() where !table.bytes(i).isEmpty {
            switch t {
            case .control, .unknown: all.append(Int32(i))
            case .userDefined: all.append(Int32(i)); userDefined.append(Int32(i))
            default: break
            }
        }
        special = SpecialMatcher(ids: all, table: table)
        specialNoControl = SpecialMatcher(ids: userDefined, table: table)
    }

    /// The id of an exact piece, if the vocabulary has it.
    public func id(of piece: String) -> Int32? { table.id(of: piece.utf8) }

    /// Whether `id` is a control token (BOS, EOS, turn markers, unused slots).
    public func isControl(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < types.count && (types[Int(id)] == .control || types[Int(id)] == .unknown)
    }

    /// User-defined pieces that are markers rather than text: Gemma 3's multimodal markers.
    /// GGUF files (and llama.cpp) store them as USER_DEFINED, so `decode` renders them like
    /// llama.cpp's detokenizer does, but a model that samples one has not written text.
    static let markerPieces: Set<String> = [
        "[multimodal]", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
        "<start_of_audio>", "<end_of_audio>", "<audio_soft_token>",
    ]

    /// Whether `id` stands for no text in generated output: a control, unknown or unused token,
    /// or a user-defined marker (`markerPieces`, and Gemma 4's `<|...>` / `<...|>` turn, tool,
    /// thinking and multimodal markers, which its GGUF stores as USER_DEFINED). Other
    /// user-defined pieces (`<table>`, runs of spaces) are text.
    public func isMarker(_ id: Int32) -> Bool {
        guard id >= 0, Int(id) < types.count else { return false }
        switch types[Int(id)] {
        case .control, .unknown, .unused: return true
        case .normal, .byte: return false
        case .userDefined:
            let p = table.bytes(Int(id))
            guard p.count > 2, p.first == 0x3C || p.first == 0x5B else { return false }  // "<" or "["
            let s = String(decoding: p, as: UTF8.self)
            return Self.markerPieces.contains(s) || s.hasPrefix("<|") || s.hasSuffix("|>")
        }
    }

    /// Generated text: `decode` without markers (`isMarker`), so a sampled control or
    /// multimodal token never shows up as text.
    public func decodeText(_ ids: [Int32]) -> String {
        decode(ids.filter { !isMarker($0) })
    }

    // MARK: Encoding

    /// Token ids of `text`. `addSpecial` adds BOS/EOS as the model says; `parseSpecial`
    /// recognises control-token markup (`<start_of_turn>`, `<bos>`, ...) in the text, as
    /// llama.cpp does with `parse_special = true`. User-defined pieces (whitespace runs, HTML
    /// tags) are always matched whole.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        if addSpecial, addBOS, let bos = bosID { out.append(bos) }
        let utf8 = Array(text.utf8)
        var isPrevSpecial = true
        for fragment in partition(utf8, parseSpecial: parseSpecial) {
            switch fragment {
            case let .token(id):
                out.append(id)
                isPrevSpecial = true
            case let .text(range):
                var escaped: [UInt8] = []
                escaped.reserveCapacity(range.count + 8)
                if addSpacePrefix && isPrevSpecial { escaped += [0xE2, 0x96, 0x81] }
                for b in utf8[range] {
                    if b == 0x20 { escaped += [0xE2, 0x96, 0x81] } else { escaped.append(b) }
                }
                bpe(escaped, into: &out)
                isPrevSpecial = false
            }
        }
        if addSpecial, addEOS, let eos = eosID { out.append(eos) }
        return out
    }

    private enum Fragment { case text(Range<Int>), token(Int32) }

    /// Splits `text` into special tokens and raw text exactly as llama.cpp's
    /// `tokenizer_st_partition`: special pieces are taken longest first; each claims its
    /// non-overlapping left-to-right occurrences inside still-unclaimed text.
    private func partition(_ text: [UInt8], parseSpecial: Bool) -> [Fragment] {
        let matcher = parseSpecial ? special : specialNoControl
        if text.isEmpty { return [] }
        // Every occurrence of every special piece (the trie finds them in one pass).
        var occurrences: [(rank: Int32, pos: Int, id: Int32, len: Int)] = []
        text.withUnsafeBufferPointer { buf in
            for p in 0..<buf.count {
                matcher.forEachMatch(in: buf, at: p) { id, len, rank in occurrences.append((rank, p, id, len)) }
            }
        }
        if occurrences.isEmpty { return [.text(0..<text.count)] }
        occurrences.sort { $0.rank != $1.rank ? $0.rank < $1.rank : $0.pos < $1.pos }
        var claimed = [Bool](repeating: false, count: text.count)
        var accepted: [(pos: Int, id: Int32, len: Int)] = []
        var i = 0
        while i < occurrences.count {
            let rank = occurrences[i].rank
            var searchFrom = 0  // a piece's next match starts after its previous one
            while i < occurrences.count && occurrences[i].rank == rank {
                let o = occurrences[i]
                i += 1
                guard o.pos >= searchFrom else { continue }
                var free = true
                for k in o.pos..<(o.pos + o.len) where claimed[k] { free = false; break }
                guard free else { continue }
                for k in o.pos..<(o.pos + o.len) { claimed[k] = true }
                accepted.append((o.pos, o.id, o.len))
                searchFrom = o.pos + o.len
            }
        }
        accepted.sort { $0.pos < $1.pos }
        var fragments: [Fragment] = []
        var at = 0
        for a in accepted {
            if a.pos > at { fragments.append(.text(at..<a.pos)) }
            fragments.append(.token(a.id))
            at = a.pos + a.len
        }
        if at < text.count { fragments.append(.text(at..<text.count)) }
        return fragments
    }

    /// BPE over one escaped fragment, appending ids to `out`.
    private func bpe(_ text: [UInt8], into out: inout [Int32]) {
        if text.isEmpty { return }
        switch mergeRule {
        case .scores: spm(text, into: &out)
        case let .merges(table): hfBPE(text, merges: table, into: &out)
        }
    }

    private struct Symbol { var start: Int; var length: Int; var prev: Int; var next: Int }

    /// Splits into UTF-8 characters as llama.cpp does (length from the lead byte, clipped).
    private static func characters(_ text: [UInt8]) -> [Symbol] {
        var symbols: [Symbol] = []
        symbols.reserveCapacity(text.count)
        var offs = 0
        while offs < text.count {
            let lead = text[offs]
            let n = lead < 0x80 ? 1 : lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
            let len = min(n, text.count - offs)
            symbols.append(Symbol(start: offs, length: len, prev: symbols.count - 1, next: symbols.count + 1))
            offs += len
        }
        symbols[symbols.count - 1].next = -1
        return symbols
    }

    /// llama.cpp's `llm_tokenizer_spm_session::tokenize`.
    private func spm(_ text: [UInt8], into out: inout [Int32]) {
        var symbols = Self.characters(text)
        var heap = Heap<Bigram>()
        func tryAdd(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let s = symbols[left].start, n = symbols[left].length + symbols[right].length
            guard let id = table.id(of: text[s..<(s + n)]) else { return }
            heap.push(Bigram(score: scores[Int(id)], left: left, right: right, size: n))
        }
        for i in 1..<max(symbols.count, 1) { tryAdd(i - 1, i) }
        while let b = heap.pop() {
            let l = b.left, r = b.right
            // Stale entry: one side already merged away or grown.
            if symbols[l].length == 0 || symbols[r].length == 0 || symbols[l].length + symbols[r].length != b.size { continue }
            symbols[l].length += symbols[r].length
            symbols[r].length = 0
            symbols[l].next = symbols[r].next
            if symbols[r].next >= 0 { symbols[symbols[r].next].prev = l }
            tryAdd(symbols[l].prev, l)
            tryAdd(l, symbols[l].next)
        }
        var i = 0
        while i != -1 {
            let s = symbols[i]
            if let id = table.id(of: text[s.start..<(s.start + s.length)]) {
                out.append(id)
            } else {
                // Only unmerged single characters can miss: spell them as bytes.
                for k in s.start..<(s.start + s.length) { appendByte(text[k], into: &out) }
            }
            i = s.next
        }
    }

    private func appendByte(_ b: UInt8, into out: inout [Int32]) {
        let id = byteTokens[Int(b)]
        if id >= 0 { out.append(id) } else if let unk = unknownID { out.append(unk) }
    }

    /// Hugging Face `tokenizers` BPE (`Word::merge_all`) with byte fallback.
    private func hfBPE(_ text: [UInt8], merges: [UInt64: MergeEntry], into out: inout [Int32]) {
        // Initial symbols: characters in the vocab, else their bytes as <0xXX> tokens.
        var ids: [Int32] = []
        for c in Self.characters(text) {
            if let id = table.id(of: text[c.start..<(c.start + c.length)]) { ids.append(id) }
            else { for k in c.start..<(c.start + c.length) { appendByte(text[k], into: &ids) } }
        }
        var prev = Array(-1..<(ids.count - 1)), next = Array(1...max(ids.count, 1))
        if !ids.isEmpty { next[ids.count - 1] = -1 }
        var alive = [Bool](repeating: true, count: ids.count)
        var heap = Heap<RankedMerge>()
        func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }
        for i in 0..<max(ids.count - 1, 0) {
            if let m = merges[key(ids[i], ids[i + 1])] { heap.push(RankedMerge(rank: m.rank, pos: i, result: m.result)) }
        }
        while let top = heap.pop() {
            let p = top.pos
            guard alive[p], next[p] >= 0 else { continue }
            let n = next[p]
            guard let m = merges[key(ids[p], ids[n])], m.result == top.result else { continue }
            ids[p] = m.result
            alive[n] = false
            next[p] = next[n]
            if next[n] >= 0 { prev[next[n]] = p }
            if prev[p] >= 0, let m2 = merges[key(ids[prev[p]], ids[p])] {
                heap.push(RankedMerge(rank: m2.rank, pos: prev[p], result: m2.result))
            }
            if next[p] >= 0, let m3 = merges[key(ids[p], ids[next[p]])] {
                heap.push(RankedMerge(rank: m3.rank, pos: p, result: m3.result))
            }
        }
        for i in 0..<ids.count where alive[i] { out.append(ids[i]) }
    }

    // MARK: Decoding

    /// The bytes a token stands for when decoded: "▁" → space for normal pieces, the byte of a
    /// `<0xXX>` token, user-defined pieces as written, control tokens empty unless
    /// `renderSpecial` (as llama.cpp's `token_to_piece`).
    public func bytes(of id: Int32, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0, Int(id) < pieces.count else { return [] }
        let i = Int(id)
        let p = table.bytes(i)
        switch types[i] {
        case .byte:
            if let b = Self.byteValue(Array(p)) { return [b] }
            return Array(p)
        case .control, .unknown, .unused:
            return renderSpecial ? Array(p) : []
        case .userDefined:
            return Array(p)
        case .normal:
            var out: [UInt8] = []
            out.reserveCapacity(p.count)
            var k = p.startIndex
            while k < p.endIndex {
                if k + 2 < p.endIndex, p[k] == 0xE2, p[k + 1] == 0x96, p[k + 2] == 0x81 { out.append(0x20); k += 3 }
                else { out.append(p[k]); k += 1 }
            }
            return out
        }
    }

    /// Parses "<0xXX>".
    static func byteValue(_ p: [UInt8]) -> UInt8? {
        guard p.count == 6, p[0] == 0x3C, p[1] == 0x30, p[2] == 0x78, p[5] == 0x3E,
              let v = UInt8(String(decoding: p[3...4], as: UTF8.self), radix: 16) else { return nil }
        return v
    }

    /// Decodes ids to text (invalid UTF-8 from stray byte tokens becomes U+FFFD).
    /// Control tokens are skipped unless `renderSpecial`.
    public func decode(_ ids: [Int32], renderSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes += self.bytes(of: id, renderSpecial: renderSpecial) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Finds special pieces starting at a position: a byte trie over their UTF-8.
private struct SpecialMatcher: Sendable {
    /// Per node: child node per byte.
    private var children: [[UInt8: Int32]] = [[:]]
    /// Per node: (id, priority rank) of the piece ending there, if any.
    private var terminal: [(id: Int32, rank: Int32)?] = [nil]

    /// `ids` are candidate pieces; priority is llama.cpp's: longer first, then lower id.
    init(ids: [Int32], table: PieceTable) {
        let ordered = ids.sorted {
            let a = table.bytes(Int($0)).count, b = table.bytes(Int($1)).count
            return a != b ? a > b : $0 < $1
        }
        for (rank, id) in ordered.enumerated() {
            var node = 0
            for b in table.bytes(Int(id)) {
                if let c = children[node][b] { node = Int(c) } else {
                    children.append([:]); terminal.append(nil)
                    children[node][b] = Int32(children.count - 1)
                    node = children.count - 1
                }
            }
            // Duplicate text: the first (higher-priority) entry wins.
            if terminal[node] == nil { terminal[node] = (id, Int32(rank)) }
        }
    }

    func forEachMatch(in text: UnsafeBufferPointer<UInt8>, at start: Int, _ body: (Int32, Int, Int32) -> Void) {
        var node = 0
        var p = start
        while p < text.count, let c = children[node][text[p]] {
            node = Int(c)
            p += 1
            if let t = terminal[node] { body(t.id, p - start, t.rank) }
        }
    }
}

private struct Bigram: HeapElement {
    let score: Float
    let left: Int
    let right: Int
    let size: Int
    /// llama.cpp's comparator: higher score first, ties to the smaller left index.
    static func before(_ a: Bigram, _ b: Bigram) -> Bool {
        a.score != b.score ? a.score > b.score : a.left < b.left
    }
}

private struct RankedMerge: HeapElement {
    let rank: Int32
    let pos: Int
    let result: Int32
    /// tokenizers' `Merge` ordering: lower rank first, ties to the smaller position.
    static func before(_ a: RankedMerge, _ b: RankedMerge) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos
    }
}

protocol HeapElement { static func before(_ a: Self, _ b: Self) -> Bool }

/// A binary heap; `pop` returns the element that comes `before` all others.
struct Heap<Element: HeapElement> {
    private var items: [Element] = []

    mutating func push(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Element.before(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Element? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < items.count, Element.before(items[l], items[best]) { best = l }
                if r < items.count, Element.before(items[r], items[best]) { best = r }
                if best == i { break }
                items.swapAt(i, best)
                i = best
            }
        }
        return first
    }
}

/// Every piece's UTF-8 in one buffer, and an open-addressing hash from bytes to id. Replaces an
/// array of 262144 small arrays plus a dictionary keyed by them (~19 MB of heap objects for
/// Gemma 3's vocabulary on the rank that tokenizes) with three flat arrays (~5 MB).
struct PieceTable: Sendable {
    private let blob: [UInt8]
    private let offsets: [UInt32]  // count + 1: piece i is blob[offsets[i] ..< offsets[i + 1]]
    private let slots: [Int32]     // power-of-two table of ids, -1 = empty; linear probing
    private let mask: Int

    init(pieces: [String]) {
        var blob: [UInt8] = []
        var offsets: [UInt32] = [0]
        offsets.reserveCapacity(pieces.count + 1)
        for p in pieces {
            blob.append(contentsOf: p.utf8)
            offsets.append(UInt32(truncatingIfNeeded: blob.count))
        }
        self.blob = blob
        self.offsets = offsets
        var size = 16
        while size < 2 * pieces.count { size <<= 1 }
        mask = size - 1
        var slots = [Int32](repeating: -1, count: size)
        for i in 0..<pieces.count {
            let key = blob[Int(offsets[i])..<Int(offsets[i + 1])]
            var h = Self.hash(key) & (size - 1)
            while slots[h] >= 0 {
                let j = Int(slots[h])
                // Later duplicates win, as in llama.cpp's token_to_id map.
                if blob[Int(offsets[j])..<Int(offsets[j + 1])].elementsEqual(key) { break }
                h = (h + 1) & (size - 1)
            }
            slots[h] = Int32(i)
        }
        self.slots = slots
    }

    /// The UTF-8 bytes of piece `i`.
    func bytes(_ i: Int) -> ArraySlice<UInt8> { blob[Int(offsets[i])..<Int(offsets[i + 1])] }

    /// The id of the piece with exactly these bytes.
    func id<C: Collection>(of key: C) -> Int32? where C.Element == UInt8 {
        var h = Self.hash(key) & mask
        while slots[h] >= 0 {
            let j = Int(slots[h])
            if bytes(j).elementsEqual(key) { return Int32(j) }
            h = (h + 1) & mask
        }
        return nil
    }

    /// FNV-1a, 64 bit.
    private static func hash<C: Collection>(_ key: C) -> Int where C.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 32))
    }
}
