import ArgumentParser

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "serve") }
}
