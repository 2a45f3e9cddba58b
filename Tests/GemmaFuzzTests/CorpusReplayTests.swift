// Every committed fuzz input through its target, in every test run: the seeds under
// Fuzz/corpus/<target>/ and each crash libFuzzer found under Fuzz/regressions/<target>/
// (kept after its fix). A regression crashes or traps this test process, which fails the
// suite. Also checks that the seeds exercise the parsers (most are accepted) and that the
// committed seeds are what `Scripts/fuzz.sh seeds` would write from today's fixtures.
import Foundation
import Testing
import GemmaFuzz
import GemmaTestSupport

@Suite struct CorpusReplayTests {
    static func inputs(_ kind: String, _ target: FuzzTarget) throws -> [(String, [UInt8])] {
        let dir = TestPaths.root.appendingPathComponent("Fuzz/\(kind)/\(target.rawValue)")
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return [] }
        return try names.filter { !$0.hasPrefix(".") }.sorted().map { name in
            (name, [UInt8](try Data(contentsOf: dir.appendingPathComponent(name))))
        }
    }

    static func harness(_ target: FuzzTarget) throws -> FuzzHarness {
        let model = target == .http ? try TestPaths.requireDefaultModel() : nil
        return try FuzzHarness(target: target, resources: FuzzResources(defaultModel: model))
    }

    @Test(arguments: FuzzTarget.allCases)
    func seedsAreCommittedAndAccepted(_ target: FuzzTarget) throws {
        let committed = try Self.inputs("corpus", target)
        let expected = try FuzzSeeds.seeds(target, fixtures: TestPaths.root.appendingPathComponent("Tests/Fixtures"))
        // Each generated seed is committed byte for byte (libFuzzer may have added more).
        for (name, bytes) in expected {
            #expect(committed.first { $0.0 == name }?.1 == bytes, "Fuzz/corpus/\(target.rawValue)/\(name) missing or stale: run Scripts/fuzz.sh seeds")
        }
        let harness = try Self.harness(target)
        // Seeds are valid files and requests, so each must be accepted (a harness that rejected
        // all its seeds would fuzz only the first few bytes of each format), except those named
        // as refused on purpose.
        for (name, bytes) in expected {
            #expect(harness.run(bytes) == !name.contains("_refused"), "\(target.rawValue) seed \(name)")
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func replayCorpusAndRegressions(_ target: FuzzTarget) throws {
        let harness = try Self.harness(target)
        for (_, bytes) in try Self.inputs("corpus", target) + Self.inputs("regressions", target) {
            harness.run(bytes)
        }
    }
}
