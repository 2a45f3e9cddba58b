import ArgumentParser

struct ClusterCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster-check", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "cluster-check") }
}
