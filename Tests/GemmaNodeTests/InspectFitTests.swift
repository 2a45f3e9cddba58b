// `inspect --fit` and `--machines` as users run them: the built binary.
import Foundation
import Testing
import GemmaTestSupport

@Suite("inspect --fit")
struct InspectFitTests {
    /// Parses --json output of --fit: every rank's planned bytes against its machine.
    func rankFits(_ stdout: String) throws -> [(planned: Int, capacity: Int)] {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
        let ranks = try #require(json["ranks"] as? [[String: Any]])
        return try ranks.map { r in
            let parts = try ["weightBytes", "kvCacheBytes", "activationBytes", "overheadBytes"].map { try #require(r[$0] as? Int) }
            return (parts.reduce(0, +), try #require(r["capacityBytes"] as? Int))
        }
    }

    @Test func fitsThreeMachinesOfAPreset() throws {
        let args = ["inspect", "--config", "gemma-3-4b", "--quant", "q4_k", "--fit", "1.5,1.5,3", "--kv-type", "f16"]
        let out = try GemmaNodeBinary.run(args)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("with 4096 tokens of f16 KV cache"), "\(out.stdout)")
        #expect(out.stdout.contains("fits: --split "))
        let json = try GemmaNodeBinary.run(args + ["--json"])
        #expect(json.status == 0, "\(json.all)")
        let fits = try rankFits(json.stdout)
        #expect(fits.count == 3)
        #expect(fits.allSatisfy { $0.planned <= $0.capacity }, "\(fits)")
        #expect(fits.map(\.capacity) == [1_500_000_000, 1_500_000_000, 3_000_000_000])
    }

    @Test func fitsAGGUFFile() throws {
        let file = TestPaths.fixture("gguf_gemma4/gemma4_moe.gguf")
        let out = try GemmaNodeBinary.run(["inspect", "-m", file.path, "--fit", "0.01,0.02", "--overhead-mb", "0", "--context", "64", "--json"])
        #expect(out.status == 0, "\(out.all)")
        let fits = try rankFits(out.stdout)
        #expect(fits.count == 2 && fits.allSatisfy { $0.planned <= $0.capacity }, "\(fits)")
    }

    @Test func namesTheShortMachine() throws {
        let out = try GemmaNodeBinary.run(["inspect", "--config", "gemma-3-4b", "--quant", "q4_k", "--fit", "0.2,8,8"])
        #expect(out.status == 1, "\(out.all)")
        #expect(out.stdout.contains("does not fit: machine 0 (0.20 GB) is short by"), "\(out.stdout)")
        #expect(!out.stdout.contains("machine 1 (8.00 GB) is short"))
    }

    @Test func refusesMalformedInput() throws {
        let cases: [([String], String)] = [
            (["--fit", "8,,16"], "--fit must be positive numbers of GB"),
            (["--fit", "8,abc"], "--fit must be positive numbers of GB"),
            (["--fit", "0,8"], "--fit must be positive numbers of GB"),
            (["--fit", "8,8", "--split", "1,1"], "leave out --split"),
            (["--fit", "8,8", "--ranks", "2"], "leave out --ranks"),
            (["--fit", "8", "--machines", "8"], "not both"),
            (["--machines", "0"], "--machines must be a positive number"),
            (["--fit", "8", "--kv-type", "q4"], "--kv-type must be f32, f16 or q8_0"),
            (["--fit", "8", "--overhead-mb", "nan"], "--overhead-mb must be 0 or positive"),
        ]
        for (extra, message) in cases {
            let out = try GemmaNodeBinary.run(["inspect", "--config", "gemma-3-1b"] + extra)
            #expect(out.status != 0, "\(extra): \(out.all)")
            #expect(out.stderr.contains(message), "\(extra): \(out.all)")
        }
    }

    @Test func machinesAnswersHowMany() throws {
        let out = try GemmaNodeBinary.run(["inspect", "--config", "gemma-4-31b", "--quant", "q4_k", "--machines", "8", "--context", "4096"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.hasPrefix("fewest machines of 8 GB for gemma-4-31b at q4_k with 4096 tokens of f16 KV cache: "), "\(out.stdout)")
        #expect(out.stdout.contains("fits: --split "))
    }
}
