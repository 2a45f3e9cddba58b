// `gemma-node shard` files (ShardFiles.swift): a model cut into one file per rank loads into
// exactly the shard every rank reading the model gets (same bytes, so bit-identical logits,
// no tolerance), and a file cut for another rank, rank count or split is refused by name.
import Foundation
import Testing
@testable import GemmaModel
import GemmaParallel
import GemmaTestSupport

@Suite("Shard files")
struct ShardFilesTests {
    static let cases: [(String, URL)] = [
        ("gemma1_mqa", hfFixtures.appendingPathComponent("gemma1_mqa")),
        ("gemma3_bf16", hfFixtures.appendingPathComponent("gemma3_bf16")),
        ("gemma4_e_style", hfFixtures.appendingPathComponent("gemma4_e_style")),
        ("gemma4_moe", hfFixtures.appendingPathComponent("gemma4_moe")),
        ("gemma3_pattern", TestPaths.fixture("gguf_models").appendingPathComponent("gemma3_pattern_q8.gguf")),
        ("gemma4_moe", TestPaths.fixture("gguf_gemma4").appendingPathComponent("gemma4_moe.gguf")),
    ]

    func temporaryDirectory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("gemma-node-shards-\(UUID().uuidString)")
    }

    @Test(arguments: 0..<cases.count, [[1.0, 1.0], [3.0, 1.0], [2.0, 1.0, 1.0]])
    func shardsLoadTheSameWeights(index: Int, split: [Double]) throws {
        let (name, model) = Self.cases[index]
        let local: (logits: [[Float]], greedy: [Int32])
        do {
            local = try runFixture(name, ranks: split.count, feeding: .prefill, greedySteps: 8, model: model, split: split)
        } catch {
            // A split this file cannot take is refused when cutting too.
            #expect(throws: Error.self) {
                _ = try ShardFiles.write(model: model, ranks: split.count, split: split, to: temporaryDirectory(), sourceFingerprint: "t")
            }
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reports = try ShardFiles.write(model: model, ranks: split.count, split: split, to: dir, sourceFingerprint: "t")
        #expect(reports.count == split.count)
        let sharded = try runFixture(name, ranks: split.count, feeding: .prefill, greedySteps: 8, model: dir, split: split)
        #expect(sharded.logits == local.logits, "\(model.lastPathComponent) split \(split): max |diff| \(maxAbsDiff(sharded.logits, local.logits))")
        #expect(sharded.greedy == local.greedy)
    }

    func loadError(_ dir: URL, ranks: Int, split: [Double]? = nil) -> String? {
        do {
            _ = try LocalCommunicator.run(ranks: ranks) { comm in
                _ = try GemmaShard.load(path: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32, split: split))
                return 0
            }
            return nil
        } catch { return "\(error)" }
    }

    @Test func wrongRankCountSplitOrFileAreRefusedByName() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try ShardFiles.write(model: hfFixtures.appendingPathComponent("gemma3_pattern"), ranks: 2, split: nil, to: dir, sourceFingerprint: "t")
        #expect(loadError(dir, ranks: 2) == nil)

        let three = try #require(loadError(dir, ranks: 3, split: [1, 1, 1]))
        #expect(three.contains("no rank-0-of-3.gguf") && three.contains("rank-0-of-2.gguf, rank-1-of-2.gguf"), "\(three)")

        let uneven = try #require(loadError(dir, ranks: 2, split: [3, 1]))
        #expect(uneven.contains("rank-0-of-2.gguf: cut for the even split, this run asks for --split 3,1"), "\(uneven)")

        // Rank 1's file put where rank 0's belongs.
        let fm = FileManager.default
        try fm.removeItem(at: dir.appendingPathComponent("rank-0-of-2.gguf"))
        try fm.copyItem(at: dir.appendingPathComponent("rank-1-of-2.gguf"), to: dir.appendingPathComponent("rank-0-of-2.gguf"))
        let swapped = try #require(loadError(dir, ranks: 2))
        #expect(swapped.contains("rank-0-of-2.gguf: cut for rank 1 of 2, loaded as rank 0 of 2"), "\(swapped)")

        // A truncated shard file is the GGUF reader's error, naming the file.
        let data = try Data(contentsOf: dir.appendingPathComponent("rank-1-of-2.gguf"))
        try data.prefix(data.count / 2).write(to: dir.appendingPathComponent("rank-0-of-2.gguf"))
        let cut = try #require(loadError(dir, ranks: 2))
        #expect(cut.contains("rank-0-of-2.gguf"), "\(cut)")
    }
}
