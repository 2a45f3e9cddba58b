// Stop strings over streamed text: text is emitted as soon as it can no longer be the start of
// a stop string, and generation ends at the first complete match (the stop string itself is
// not returned, as OpenAI does). Works on Unicode scalars so a match never splits a character.

/// Incremental stop-string matcher for one generation.
public struct StopMatcher: Sendable {
    public let stops: [[Unicode.Scalar]]
    /// Text received but not yet emitted: it may still be the start of a stop string.
    private var held: [Unicode.Scalar] = []

    public init(_ stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }.map { Array($0.unicodeScalars) }
    }

    /// Adds text; returns what may be emitted now and whether a stop string matched (then the
    /// text before the match is returned and nothing after it is ever emitted).
    public mutating func push(_ text: String) -> (emit: String, stopped: Bool) {
        held.append(contentsOf: text.unicodeScalars)
        guard !stops.isEmpty else {
            defer { held.removeAll() }
            return (Self.string(held), false)
        }
        // Earliest complete match.
        var best: Int?
        for s in stops where s.count <= held.count {
            var i = 0
            while i + s.count <= held.count {
                if held[i] == s[0] && Array(held[i..<(i + s.count)]) == s {
                    if best == nil || i < best! { best = i }
                    break
                }
                i += 1
            }
        }
        if let best {
            let out = Self.string(held[0..<best])
            held.removeAll()
            return (out, true)
        }
        // Keep the longest suffix that is a proper prefix of some stop string.
        var keep = 0
        let longest = stops.map(\.count).max() ?? 0
        for k in stride(from: min(held.count, longest - 1), to: 0, by: -1) {
            let suffix = held[(held.count - k)...]
            if stops.contains(where: { $0.count > k && Array($0[0..<k]) == Array(suffix) }) {
                keep = k
                break
            }
        }
        let out = Self.string(held[0..<(held.count - keep)])
        held.removeFirst(held.count - keep)
        return (out, false)
    }

    /// Text still held at the end of generation (no stop string completed).
    public mutating func flush() -> String {
        defer { held.removeAll() }
        return Self.string(held)
    }

    static func string<C: Collection>(_ scalars: C) -> String where C.Element == Unicode.Scalar {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars)
        return String(s)
    }
}
