// `gemma-node serve`: not built yet. It already accepts the shared flags so scripts can be
// written against it, and it says so and exits non-zero instead of pretending to work.
import ArgumentParser

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Serve an OpenAI-compatible HTTP API from the coordinator. (not implemented yet)")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    func run() throws { throw NotImplemented(command: "serve") }
}
