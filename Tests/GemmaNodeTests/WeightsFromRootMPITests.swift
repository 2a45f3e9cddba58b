// `--weights-from-root` under the real mpirun: rank 0 alone is given the model file, the other
// ranks a path that does not exist (MPMD launch), and the run must generate exactly the tokens
// of every rank reading the file (the weights are the same bytes, so greedy ids are equal).
import Foundation
import Testing
import GemmaTestSupport

@Suite(.serialized) struct WeightsFromRootMPITests {
    static let absent = "/nonexistent/gemma-node-worker/model.gguf"

    func generate(_ perRank: [[String]]) throws -> GenerateOutput {
        let r = try GemmaNodeBinary.mpirun(perRank: perRank, timeout: 300)
        try #require(!r.timedOut && r.status == 0, "\(r.all)")
        return try JSONDecoder().decode(GenerateOutput.self, from: Data(r.stdout.utf8))
    }

    /// The default model (Gemma 3 270M Q4_K_M) at 2 ranks and at 3 (4 query heads and 1 KV head
    /// on 3 ranks: uneven heads, the KV head replicated), against the same rank count reading
    /// the file on every rank.
    @Test(arguments: [2, 3])
    func defaultModelStreamedMatchesEveryRankReading(ranks: Int) throws {
        let model = try TestPaths.requireDefaultModel()
        var common = ["generate", "-p", "The three primary colours are", "-n", "16", "--temp", "0", "--json", "-t", "1"]
        if ranks == 3 { common += ["--split", "1,1,1"] }
        let reading = try generate(Array(repeating: common + ["-m", model], count: ranks))
        let streamed = try generate([common + ["-m", model, "--weights-from-root"]] +
                                    Array(repeating: common + ["-m", Self.absent, "--weights-from-root"], count: ranks - 1))
        #expect(streamed.tokens.count == 16)
        #expect(streamed.tokens == reading.tokens)
    }

    /// Rank 0 without the file: every rank exits non-zero with rank 0's message, no hang.
    @Test func missingFileOnRootFailsCleanly() throws {
        let args = ["generate", "-p", "hi", "-n", "2", "-t", "1", "--weights-from-root", "-m"]
        let r = try GemmaNodeBinary.mpirun(perRank: [args + ["/nonexistent/root/model.gguf"], args + [Self.absent]], timeout: 120)
        #expect(!r.timedOut)
        #expect(r.status != 0)
        #expect(r.all.contains("/nonexistent/root/model.gguf"), "\(r.all)")
        #expect(!r.all.contains(Self.absent), "a worker looked at its own path: \(r.all)")
    }
}

/// `gemma-node shard` then `-m DIR` under the real mpirun, each rank given a directory that
/// holds only `shards.json` and its own file (as each host of a cluster would).
@Suite(.serialized) struct ShardFilesMPITests {
    @Test(arguments: [["1", "1"], ["3", "1"], ["1", "1", "1"]])
    func defaultModelFromPerHostShards(shares: [String]) throws {
        let model = try TestPaths.requireDefaultModel()
        let ranks = shares.count
        let split = shares.joined(separator: ",")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-node-shard-mpi-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let all = root.appendingPathComponent("all")
        let cut = try GemmaNodeBinary.run(["shard", "-m", model, "--ranks", String(ranks), "--split", split, "-o", all.path], timeout: 300)
        try #require(cut.status == 0, "\(cut.all)")
        // Host r: shards.json and rank-r-of-N.gguf only.
        var hosts: [String] = []
        for r in 0..<ranks {
            let host = root.appendingPathComponent("host\(r)")
            try FileManager.default.createDirectory(at: host, withIntermediateDirectories: true)
            for name in ["shards.json", "rank-\(r)-of-\(ranks).gguf"] {
                try FileManager.default.copyItem(at: all.appendingPathComponent(name), to: host.appendingPathComponent(name))
            }
            hosts.append(host.path)
        }
        let common = ["generate", "-p", "The three primary colours are", "-n", "16", "--temp", "0", "--json", "-t", "1", "--split", split]
        let reading = try GemmaNodeBinary.mpirun(perRank: Array(repeating: common + ["-m", model], count: ranks), timeout: 300)
        try #require(reading.status == 0, "\(reading.all)")
        let sharded = try GemmaNodeBinary.mpirun(perRank: hosts.map { common + ["-m", $0] }, timeout: 300)
        try #require(sharded.status == 0, "\(sharded.all)")
        let a = try JSONDecoder().decode(GenerateOutput.self, from: Data(reading.stdout.utf8))
        let b = try JSONDecoder().decode(GenerateOutput.self, from: Data(sharded.stdout.utf8))
        #expect(b.prompt_tokens == a.prompt_tokens)
        #expect(b.tokens.count == 16 && b.tokens == a.tokens)
    }
}
