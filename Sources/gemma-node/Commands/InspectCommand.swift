// `gemma-node inspect`: not built yet. It already accepts the shared flags so scripts can be
// written against it, and it says so and exits non-zero instead of pretending to work.
import ArgumentParser

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Print the model architecture and what each rank would own. (not implemented yet)")

    @OptionGroup var model: ModelOptions

    func run() throws { throw NotImplemented(command: "inspect") }
}
