// `gemma-node tokenize`: the token ids of a prompt as JSON, from the model's own tokenizer
// (GGUF metadata, or tokenizer.json / tokenizer.model in a Hugging Face directory). No MPI and
// no weights: only the vocabulary is read, so it answers in well under a second.
import ArgumentParser
import Foundation
import GemmaTokenizer

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a prompt as JSON: {\"tokens\":[2,...]}."
    )

    @OptionGroup var model: ModelOptions
    @OptionGroup var prompt: PromptOptions

    @Flag(name: .customLong("no-bos"), help: "Do not add BOS (by default BOS is added when the model says so).")
    var noBOS = false

    @Flag(name: .customLong("pieces"), help: "Also print each token's piece text.")
    var pieces = false

    @Flag(name: .customLong("no-parse-special"), help: "Treat control-token markup such as <start_of_turn> as plain text.")
    var noParseSpecial = false

    @Flag(name: .customLong("timing"), help: "Print load and encode times to stderr.")
    var timing = false

    func validate() throws {
        if prompt.prompt == nil { throw ValidationError("give the text to tokenize with -p/--prompt") }
    }

    func run() throws {
        let t0 = Date()
        let tokenizer = try GemmaTokenizer.load(path: model.resolvedModelPath)
        let t1 = Date()
        let ids = tokenizer.encode(prompt.prompt ?? "", addSpecial: !noBOS, parseSpecial: !noParseSpecial)
        if timing {
            let text = String(format: "load %.1f ms, encode %.2f ms (%d bytes -> %d tokens)\n",
                              t1.timeIntervalSince(t0) * 1000, Date().timeIntervalSince(t1) * 1000,
                              (prompt.prompt ?? "").utf8.count, ids.count)
            FileHandle.standardError.write(Data(text.utf8))
        }
        var json = "{\"tokens\":[" + ids.map(String.init).joined(separator: ",") + "]"
        if pieces {
            // JSONEncoder escapes the pieces (quotes, control characters, lone bytes).
            let encoded = try JSONEncoder().encode(ids.map { tokenizer.pieces[Int($0)] })
            json += ",\"pieces\":" + String(decoding: encoded, as: UTF8.self)
        }
        print(json + "}")
    }
}
