// `gemma-node logits`: not built yet. It already accepts the shared flags so scripts can be
// written against it, and it says so and exits non-zero instead of pretending to work.
import ArgumentParser

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logits", abstract: "Print the next-token logits for a prompt. (not implemented yet)")

    @OptionGroup var model: ModelOptions
    @OptionGroup var prompt: PromptOptions

    func run() throws { throw NotImplemented(command: "logits") }
}
