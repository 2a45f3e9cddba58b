import ArgumentParser

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "generate") }
}
