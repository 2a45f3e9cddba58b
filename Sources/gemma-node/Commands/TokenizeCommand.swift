import ArgumentParser

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "tokenize") }
}
