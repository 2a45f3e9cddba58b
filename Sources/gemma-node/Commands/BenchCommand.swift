// `gemma-node bench`: not built yet. It already accepts the shared flags so scripts can be
// written against it, and it says so and exits non-zero instead of pretending to work.
import ArgumentParser

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Measure prefill and decode speed. (not implemented yet)")

    @OptionGroup var model: ModelOptions
    @OptionGroup var prompt: PromptOptions

    func run() throws { throw NotImplemented(command: "bench") }
}
