// `gemma-node shard`: cuts a model into one file per rank (GemmaModel/ShardFiles.swift), so
// each host of a cluster holds only its slices: copy `shards.json` and `rank-R-of-N.gguf` to
// host R, then run with `-m DIR`. One process, no MPI.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaModel

struct ShardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard",
        abstract: "Write one file per rank holding only that rank's slices of a model.",
        discussion: "Host R needs only DIR/shards.json and DIR/rank-R-of-N.gguf; load with -m DIR at the same rank count and --split. See docs/SHARDING.md.")

    @Option(name: [.short, .customLong("model")], help: "Model file (.gguf) or Hugging Face model directory. Default: the default model.")
    var model: String?

    @Option(name: .customLong("ranks"), help: "Rank count the shards are cut for.")
    var ranks: Int

    @Option(name: .customLong("split"), help: SplitOption.help)
    var split: String?

    @Option(name: [.short, .customLong("output")], help: "Directory to write (created if missing).")
    var output: String

    func validate() throws {
        if ranks < 1 { throw ValidationError("--ranks must be at least 1, got \(ranks)") }
        if let shares = try SplitOption.parse(split), shares.count != ranks {
            throw ValidationError("--split has \(shares.count) shares for --ranks \(ranks)")
        }
    }

    func run() throws {
        let source = model ?? DefaultModel.path().path
        let shares = try SplitOption.parse(split)
        let fingerprint: String
        do { fingerprint = try ModelFingerprint.of(path: source) } catch { throw SynthCommandError(message: "\(error)") }
        let start = Date()
        var progress: Progress?
        var current = -1
        let reports: [ShardFileReport]
        do {
            reports = try ShardFiles.write(model: URL(fileURLWithPath: source), ranks: ranks, split: shares,
                                           to: URL(fileURLWithPath: output), sourceFingerprint: fingerprint) { rank, done, total in
                if rank != current {
                    progress?.finish()
                    current = rank
                    progress = Progress(total: total, label: "shard rank \(rank)")
                }
                progress?.update(done, total)
            }
        } catch {
            throw SynthCommandError(message: "shard: \(error)")
        }
        progress?.finish()
        for r in reports {
            print("rank \(r.rank): \(r.path), \(r.tensors) tensors, " + String(format: "%.1f MiB", Double(r.dataBytes) / 1_048_576))
        }
        print("wrote \(ranks) shard file(s) and shards.json to \(output)" + String(format: " in %.1f s", Date().timeIntervalSince(start)))
    }
}
