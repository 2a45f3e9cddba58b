// The gemma-node command line: one subcommand per file under Commands/. Without a subcommand
// it serves (`mpirun -n 4 gemma-node` starts the cluster's OpenAI-compatible server on the
// default model); `gemma-node --help` lists the commands.
import ArgumentParser
import GemmaMPI

@main
struct GemmaNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemma-node",
        abstract: "Tensor-parallel Gemma inference over MPI.",
        subcommands: [
            GenerateCommand.self, ChatCommand.self, LogitsCommand.self, PerplexityCommand.self, TokenizeCommand.self,
            ServeCommand.self, BenchCommand.self, InspectCommand.self, PlanCommand.self, ClusterCheckCommand.self, SynthCommand.self,
            ShardCommand.self,
        ],
        defaultSubcommand: ServeCommand.self
    )

    /// Line-buffers stdout before any command prints: under mpirun it is a pipe, and rank
    /// output would otherwise arrive late and out of order.
    static func main() {
        MPICommunicator.lineBufferStandardOutput()
        main(nil)
    }
}
