// The gemma-node command line: one subcommand per file under Commands/.
import ArgumentParser

@main
struct GemmaNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemma-node",
        abstract: "Tensor-parallel Gemma inference over MPI.",
        subcommands: [
            GenerateCommand.self, ChatCommand.self, LogitsCommand.self, TokenizeCommand.self,
            ServeCommand.self, BenchCommand.self, InspectCommand.self, ClusterCheckCommand.self,
        ]
    )
}

/// Thrown by subcommands that are not built yet: says so and exits non-zero.
struct NotImplemented: Error, CustomStringConvertible {
    let command: String
    var description: String { "gemma-node \(command): not implemented yet" }
}
