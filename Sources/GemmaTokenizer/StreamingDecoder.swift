// Turns a stream of token ids into text that only ever contains whole UTF-8 characters:
// byte-fallback tokens (an emoji is often four `<0xXX>` tokens) are held back until the
// character they spell is complete, so a streaming client never prints half a character.
// Markers (control tokens, and user-defined ones such as `<start_of_image>`:
// `GemmaTokenizer.isMarker`) are not text and are skipped unless `renderSpecial`.

/// Incremental decoder over one `GemmaTokenizer`. Not thread-safe (one per stream).
public struct StreamingDecoder {
    public let tokenizer: GemmaTokenizer
    /// Render markers (`<end_of_turn>`, `<start_of_image>`, ...) as their text instead of skipping them.
    public var renderSpecial: Bool
    /// Markers written as their text even without `renderSpecial` (Gemma 4's channel and
    /// tool-call markers, for the server's answer splitter, which never passes them on as text).
    public var rendered: Set<Int32>
    private var pending: [UInt8] = []

    public init(tokenizer: GemmaTokenizer, renderSpecial: Bool = false, rendered: Set<Int32> = []) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
        self.rendered = rendered
    }

    /// Bytes held back because they end in an incomplete character.
    public var pendingByteCount: Int { pending.count }

    /// Adds one token; returns the text that is now complete (possibly empty).
    public mutating func push(_ id: Int32) -> String {
        let render = renderSpecial || rendered.contains(id)
        if !render && tokenizer.isMarker(id) { return "" }
        pending += tokenizer.bytes(of: id, renderSpecial: render)
        let cut = Self.completePrefixLength(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[0..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Emits whatever is left (an incomplete trailing sequence becomes U+FFFD) and resets.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a character that could still be
    /// completed. Invalid bytes are not held (they are emitted as U+FFFD right away): only a
    /// trailing lead byte followed by fewer continuation bytes than it announces is kept.
    static func completePrefixLength(_ b: [UInt8]) -> Int {
        let n = b.count
        // A character is at most 4 bytes: look back at most 3 positions for its lead byte.
        var i = n - 1
        while i >= 0 && i >= n - 4 {
            let c = b[i]
            if c & 0xC0 == 0x80 { i -= 1; continue }  // continuation byte: keep looking
            let need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1
            return need > n - i ? i : n
        }
        return n
    }
}
