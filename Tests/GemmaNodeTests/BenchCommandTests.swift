// `gemma-node bench` end to end on a golden Hugging Face fixture, alone and under mpirun at 2
// ranks: the JSON report's shape and the step counts it must have, and flag validation.
import Foundation
import Testing

@Suite(.serialized) struct BenchCommandTests {
    static let fixture = "gemma3_pattern"
    var modelPath: String { HFExpected.root.appendingPathComponent(Self.fixture).path }

    func report(_ result: ProcessOutput) throws -> [String: Any] {
        let line = result.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }) ?? ""
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any], "no JSON object in: \(result.all)")
    }

    func check(_ r: [String: Any], ranks: Int, reps: Int, gen: Int, prompt: Int = 6, kvType: String = "f16") throws {
        #expect(r["ranks"] as? Int == ranks)
        #expect(r["kv_type"] as? String == kvType)
        let decode = try #require(r["decode_tokens_per_second"] as? [String: Any])
        let samples = try #require(decode["samples"] as? [Double])
        #expect(samples.count == reps)
        #expect(samples.allSatisfy { $0 > 0 })
        let median = try #require(decode["median"] as? Double)
        #expect(median >= (samples.min() ?? 0) && median <= (samples.max() ?? 0))
        let prefill = try #require(r["prefill_tokens_per_second"] as? [String: Any])
        #expect((prefill["samples"] as? [Double])?.count == reps)
        let perRank = try #require(r["per_rank"] as? [[String: Any]])
        #expect(perRank.count == ranks)
        for p in perRank {
            // Steps run from one forward to the next; the last decode step of the session has
            // no successor and is dropped.
            #expect(p["decode_steps"] as? Int == reps * gen - 1)
            let peak = p["peak_rss_mib"] as? Double ?? 0
            #expect(peak > 1)
            // The resident set's parts, read just before the peak, cannot exceed it (0.01 MiB:
            // the Float rounding of the three MiB figures).
            let anon = p["rss_anon_mib"] as? Double ?? 0, file = p["rss_file_mib"] as? Double ?? 0
            #expect(anon > 1 && file > 1)
            #expect(anon + file <= peak + 0.01, "anon \(anon) + file \(file) > peak \(peak)")
            let split = try #require(p["decode_step_ms"] as? [String: Double])
            let total = split["total"] ?? 0
            #expect(total > 0)
            let parts = (split["compute"] ?? 0) + (split["all_reduce"] ?? 0) + (split["sampling_and_control"] ?? 0)
                + (split["waiting_for_plan"] ?? 0)
            #expect(abs(parts - total) <= 1e-3 * total + 1e-3, "split \(split) does not add up")
            if ranks == 1 { #expect(split["all_reduce"] == 0) }
            // One sum all-reduce for the embedding and two per layer (7 layers, hidden 64, f32):
            // 15 per step of 64 floats per token, none at one rank.
            let calls = ranks == 1 ? 0.0 : 15.0
            #expect(p["decode_all_reduces_per_step"] as? Double == calls)
            #expect(p["decode_all_reduce_bytes_per_step"] as? Double == calls * 64 * 4)
            #expect(p["prefill_all_reduces_per_step"] as? Double == calls)
            #expect(p["prefill_all_reduce_bytes_per_step"] as? Double == calls * 64 * 4 * Double(prompt))
        }
        #expect((r["weight_bytes_per_token"] as? Int ?? 0) > 0)
        #expect((r["bandwidth_gb_per_s"] as? Double ?? 0) > 0)
        #expect((r["roofline_fraction"] as? Double ?? 0) > 0)
    }

    @Test func soloJSONReport() throws {
        let result = try GemmaNodeBinary.run(["bench", "-m", modelPath, "-t", "1", "-p", "6", "-n", "3", "-r", "2",
                                              "--bandwidth-mib", "16", "--json"], timeout: 120)
        #expect(result.status == 0, "\(result.all)")
        try check(try report(result), ranks: 1, reps: 2, gen: 3)
    }

    @Test func twoRanksUnderMpirun() throws {
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["bench", "-m", modelPath, "-t", "1", "-p", "6", "-n", "3", "-r", "2",
                                                           "--bandwidth-mib", "16", "--json", "--kv-type", "f32"],
                                                environment: ["GEMMA_NODE_SPIN_US": "0"], timeout: 180)
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.all)")
        // Only rank 0 prints the report.
        #expect(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.count == 1)
        try check(try report(result), ranks: 2, reps: 2, gen: 3, kvType: "f32")
    }

    /// `--emulate-link LAT_US,GBIT` holds every collective for at least the link's latency
    /// (a lower bound: a sleep never ends early), says so in the report, and changes no data.
    /// The fixture has 7 layers, so a decode step makes at least 14 all-reduces (two per
    /// layer; the embedding's is one more), each at least 3 ms on this link.
    @Test func emulatedLinkHoldsEveryCollective() throws {
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["bench", "-m", modelPath, "-t", "1", "-p", "4", "-n", "3", "-r", "1",
                                                           "--bandwidth-mib", "0", "--no-warmup", "--json", "--emulate-link", "3000,1"],
                                                environment: ["GEMMA_NODE_SPIN_US": "0"], timeout: 180)
        #expect(result.status == 0, "\(result.all)")
        let r = try report(result)
        #expect((r["emulated_link"] as? String)?.contains("3000 us") == true, "\(r["emulated_link"] ?? "nil")")
        for p in try #require(r["per_rank"] as? [[String: Any]]) {
            let split = try #require(p["decode_step_ms"] as? [String: Double])
            #expect((split["all_reduce"] ?? 0) >= 14 * 3.0, "\(split)")
        }
        let args = ["generate", "-m", modelPath, "-t", "1", "--tokens", "2,5,9,14", "-n", "6", "--temp", "0"]
        let plain = try GemmaNodeBinary.mpirun(ranks: 2, args, timeout: 120)
        let emulated = try GemmaNodeBinary.mpirun(ranks: 2, args + ["--emulate-link", "200,2.5"], timeout: 120)
        #expect(plain.status == 0 && emulated.status == 0, "\(plain.all)\n\(emulated.all)")
        #expect(plain.stdout == emulated.stdout)
        let bad = try GemmaNodeBinary.run(["generate", "-m", modelPath, "--tokens", "2,5", "--emulate-link", "fast"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--emulate-link"), "\(bad.all)")
    }

    @Test func tableAndBadFlags() throws {
        let table = try GemmaNodeBinary.run(["bench", "-m", modelPath, "-p", "4", "-n", "2", "-r", "1", "--bandwidth-mib", "0"], timeout: 120)
        #expect(table.status == 0, "\(table.all)")
        #expect(table.stdout.contains("tg2: median"))
        let bad = try GemmaNodeBinary.run(["bench", "-m", modelPath, "-r", "0"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("-r/--repetitions must be at least 1"))
    }
}
