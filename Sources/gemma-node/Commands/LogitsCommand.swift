// `gemma-node logits`: the model's raw next-token logits for a token-id prompt, as one JSON
// object on stdout (rank 0). A debugging tool: it gathers the full logits to rank 0, which
// generation never does.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaModel
import GemmaParallel

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Print the logits of a token-id prompt as JSON (last position, or every position with --all)."
    )

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var linkOptions: LinkOptions

    @OptionGroup var timeoutOptions: TimeoutOptions

    @OptionGroup var syncOptions: SyncOptions

    @Option(help: "Prompt token ids, comma-separated (e.g. 2,17,5).")
    var tokens: String

    @Flag(help: "Logits at every position instead of only the last.")
    var all = false

    @Option(help: "Print only the K largest logits per position as {\"id\", \"logit\"} pairs.")
    var top: Int?

    @Flag(name: .customLong("layer-rms"), help: "Also print the RMS of the hidden state after the embedding and after each layer (the last entry: after the final norm), over the prompt's positions.")
    var layerRMS = false

    func validate() throws {
        _ = try TokenList.parse(tokens)
        if let top, top < 1 { throw ValidationError("--top must be at least 1, got \(top)") }
    }

    func run() throws {
        let ids = try TokenList.parse(tokens)
        try ClusterSession.run(link: try linkOptions.link(), sync: try syncOptions.payload(), stepTimeout: timeoutOptions.stepTimeout) { comm in
            let model = try ModelSession.load(path: modelOptions.resolvedModelPath, options: modelOptions.loadOptions(), comm: comm)
            // The residual stream is whole on every rank after each layer's all-reduce.
            var rms: [Double] = []
            if layerRMS {
                model.hiddenStateObserver = { index, values in
                    if index == 0 { rms.removeAll() }
                    var sum = 0.0
                    for v in values { sum += Double(v) * Double(v) }
                    rms.append((sum / Double(max(1, values.count))).squareRoot())
                }
            }
            guard let rows = try gatherFullLogits(model: model, comm: comm, tokens: ids, allPositions: all) else { return }
            let json = JSONText()
            json.object {
                json.key("tokens"); json.ints(ids.map(Int.init))
                if layerRMS { json.key("layer_rms"); json.floats(rms.map(Float.init)) }
                json.key("positions")
                json.array(rows) { row in
                    json.object {
                        json.key("position"); json.int(row.position)
                        if let top {
                            json.key("top")
                            json.array(Self.topK(row.logits, top)) { entry in
                                json.object {
                                    json.key("id"); json.int(entry.id)
                                    json.key("logit"); json.float(entry.logit)
                                }
                            }
                        } else {
                            json.key("logits"); json.floats(row.logits)
                        }
                    }
                }
            }
            print(json.text)
        }
    }

    /// The k largest logits, best first, ties to the lower id.
    static func topK(_ logits: [Float], _ k: Int) -> [(id: Int, logit: Float)] {
        let order = logits.indices.sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        return order.prefix(k).map { ($0, logits[$0]) }
    }
}

/// `--tokens` parsing shared by the commands.
enum TokenList {
    static func parse(_ text: String) throws -> [Int32] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        var out: [Int32] = []
        for part in parts {
            guard let value = Int32(part) else {
                throw ValidationError("--tokens must be comma-separated integer token ids, got \"\(text)\"")
            }
            out.append(value)
        }
        if out.isEmpty { throw ValidationError("--tokens needs at least one token id") }
        return out
    }
}

/// A minimal JSON writer: exact float text (Swift's shortest round-trip form), non-finite
/// values as null (JSON has no infinities), keys written in the order given.
final class JSONText {
    private(set) var text = ""
    /// Per open container: whether the next member needs a comma.
    private var needsComma = [false]
    /// A key was just written: the next value belongs to it and takes no comma.
    private var afterKey = false

    private func beginValue() {
        if afterKey {
            afterKey = false
        } else if needsComma[needsComma.count - 1] {
            text += ","
        }
        needsComma[needsComma.count - 1] = true
    }

    func object(_ body: () -> Void) {
        beginValue(); text += "{"; needsComma.append(false)
        body()
        needsComma.removeLast(); text += "}"
    }

    func array<T>(_ items: [T], _ element: (T) -> Void) {
        beginValue(); text += "["; needsComma.append(false)
        for item in items { element(item) }
        needsComma.removeLast(); text += "]"
    }

    func key(_ name: String) {
        beginValue()
        text += Self.quoted(name) + ":"
        afterKey = true
    }

    private func value(_ raw: String) { beginValue(); text += raw }

    func int(_ x: Int) { value(String(x)) }
    func bool(_ x: Bool) { value(x ? "true" : "false") }
    func double(_ x: Double) { value(x.isFinite ? "\(x)" : "null") }
    func float(_ x: Float) { value(x.isFinite ? "\(x)" : "null") }
    func string(_ s: String?) { value(s.map(Self.quoted) ?? "null") }
    func ints(_ xs: [Int]) { value("[" + xs.map(String.init).joined(separator: ",") + "]") }
    func floats(_ xs: [Float]) { value("[" + xs.map { $0.isFinite ? "\($0)" : "null" }.joined(separator: ",") + "]") }

    static func quoted(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
