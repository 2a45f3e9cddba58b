// `gemma-node chat`: not built yet. It already accepts the shared flags so scripts can be
// written against it, and it says so and exits non-zero instead of pretending to work.
import ArgumentParser

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chat", abstract: "Interactive chat with the model's chat template. (not implemented yet)")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    func run() throws { throw NotImplemented(command: "chat") }
}
