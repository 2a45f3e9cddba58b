// `gemma-node generate`: not built yet. It already accepts the shared flags so scripts can be
// written against it, and it says so and exits non-zero instead of pretending to work.
import ArgumentParser

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Generate text from a prompt. (not implemented yet)")

    @OptionGroup var model: ModelOptions
    @OptionGroup var prompt: PromptOptions
    @OptionGroup var sampling: SamplingOptions

    func run() throws { throw NotImplemented(command: "generate") }
}
