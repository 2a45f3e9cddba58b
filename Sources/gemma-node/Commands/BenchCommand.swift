import ArgumentParser

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "bench") }
}
