import ArgumentParser

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logits", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "logits") }
}
