import ArgumentParser

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chat", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "chat") }
}
