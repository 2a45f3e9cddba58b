// `gemma-node plan` as users run it: the built binary.
import Foundation
import Testing
import GemmaTestSupport

@Suite("plan command")
struct PlanCommandTests {
    @Test func planPredictsEveryRankCount() throws {
        let out = try GemmaNodeBinary.run(["plan", "--config", "gemma-3-27b", "--ranks", "4", "--link", "200,1", "--bandwidth", "10", "--json"])
        #expect(out.status == 0, "\(out.all)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
        let rows = try #require(json["rows"] as? [[String: Any]])
        #expect(rows.count == 4)
        let tps = rows.compactMap { $0["tokensPerSecond"] as? Double }
        #expect(tps.count == 4 && tps.allSatisfy { $0 > 0 })
        let best = try #require(json["bestRanks"] as? Int)
        #expect(tps[best - 1] == tps.max())
        #expect((json["note"] as? String)?.contains("a model, not a measurement") == true)
        let text = try GemmaNodeBinary.run(["plan", "--config", "gemma-3-27b", "--ranks", "4", "--link", "200,1"])
        #expect(text.status == 0 && text.stdout.contains("PREDICTED") && text.stdout.contains("best: "), "\(text.all)")
    }

    @Test func planRefusesABadLink() throws {
        for link in ["1", "200,0", "x,1", "-5,1"] {
            let out = try GemmaNodeBinary.run(["plan", "--config", "gemma-3-1b", "--link=\(link)"])
            #expect(out.status != 0)
            #expect(out.stderr.contains("--link wants LATENCY_US,GBIT"), "\(link): \(out.all)")
        }
    }
}
