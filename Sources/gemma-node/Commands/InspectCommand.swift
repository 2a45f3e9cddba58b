// `gemma-node inspect`: the model's architecture and, for a rank count, what each rank would
// own (heads, KV heads, MLP columns, vocabulary) with its bytes of weights and KV cache. Reads
// only config.json and the safetensors headers; runs as one process (no MPI needed).
import ArgumentParser
import Foundation
import GemmaModel

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print the model architecture and what each of N ranks would own.")

    @OptionGroup var model: ModelOptions

    @Option(name: .customLong("ranks"), help: "Number of ranks to plan for.")
    var ranks: Int = 1

    @Option(name: .customLong("batch"), help: "Tokens per step (sizes the sliding-window KV ring).")
    var batch: Int = 512

    @Flag(name: .customLong("json"), help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        if ranks < 1 { throw ValidationError("--ranks must be at least 1, got \(ranks)") }
        if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
    }

    func run() throws {
        let path = model.resolvedModelPath
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw InspectError(message: "\(path) is not a Hugging Face model directory (inspect reads config.json and *.safetensors; GGUF files are not supported by inspect yet)")
        }
        let report: ShardReport
        do {
            report = try ShardReport(directory: URL(fileURLWithPath: path), ranks: ranks, maxBatchTokens: batch)
        } catch {
            throw InspectError(message: "cannot plan \(path) for \(ranks) rank\(ranks == 1 ? "" : "s"): \(error)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }
}

struct InspectError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
