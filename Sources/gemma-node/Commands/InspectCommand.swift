import ArgumentParser

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "(not implemented yet)")
    func run() throws { throw NotImplemented(command: "inspect") }
}
