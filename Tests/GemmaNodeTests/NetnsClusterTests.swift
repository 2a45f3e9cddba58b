// A simulated two-host cluster (cluster/netns/netns-cluster.sh): two network namespaces on a
// bridge in 198.18.0.0/15 with a 1 Gbit/s link each, ranks started through the namespace
// launch agent and talking over real TCP. Greedy tokens across the two hosts must equal those
// of two ranks on one host over shared memory: the same arithmetic (a sum of two partials is
// the same in either order), so any difference is the transport's. (Against one rank the
// tokens may part at a near-tie: the per-rank partial sums round differently; on this prompt
// the 12th token's top two logits are 0.05 apart at one rank and swap at two.) Runs where network namespaces can be made (root with iproute2, as in CI); elsewhere
// it is skipped and the reason shown.
import Foundation
import Testing
import GemmaTestSupport

enum NetnsCluster {
    static let script = TestPaths.root.appendingPathComponent("cluster/netns/netns-cluster.sh")

    /// Whether this process may create a network namespace (tried, then removed).
    static let available: Bool = {
        let name = "gn-probe-\(getpid())"
        guard let add = try? GemmaNodeBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "add", name],
                                                    environment: ProcessInfo.processInfo.environment, timeout: 10),
              add.status == 0 else { return false }
        _ = try? GemmaNodeBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "del", name],
                                        environment: ProcessInfo.processInfo.environment, timeout: 10)
        return true
    }()

    static func script(_ arguments: [String], timeout: TimeInterval = 60) throws -> ProcessOutput {
        try GemmaNodeBinary.launch(URL(fileURLWithPath: "/bin/bash"), [script.path] + arguments,
                                   environment: GemmaNodeBinary.environment(["GEMMA_NODE_BIN": GemmaNodeBinary.url.path]),
                                   timeout: timeout)
    }
}

@Suite(.serialized, .enabled(if: NetnsCluster.available, "network namespaces cannot be made here (needs root and iproute2)"))
struct NetnsClusterTests {
    @Test func twoHostsGenerateWhatTwoLocalRanksDo() throws {
        let model = try TestPaths.requireDefaultModel()
        let args = ["generate", "-m", model, "-p", "The capital of France is", "-n", "12", "--temp", "0", "--json", "-t", "1"]
        let local = try GemmaNodeBinary.mpirun(ranks: 2, args, timeout: 180)
        #expect(local.status == 0, "\(local.all)")
        let expected = try JSONDecoder().decode(GenerateOutput.self, from: Data(local.stdout.utf8))

        _ = try NetnsCluster.script(["down", "2"])
        let up = try NetnsCluster.script(["up", "2", "--rate", "1gbit"])
        defer {
            let down = try? NetnsCluster.script(["down", "2"])
            #expect(down?.status == 0, "\(down?.all ?? "down did not run")")
        }
        try #require(up.status == 0, "\(up.all)")
        #expect(up.stdout.contains("198.18.0.1..198.18.0.2"), "\(up.stdout)")

        let run = try NetnsCluster.script(["run", "2"] + args, timeout: 180)
        #expect(!run.timedOut)
        try #require(run.status == 0, "\(run.all)")
        let across = try JSONDecoder().decode(GenerateOutput.self, from: Data(run.stdout.utf8))
        #expect(across.prompt_tokens == expected.prompt_tokens)
        #expect(across.tokens == expected.tokens, "two hosts: \(across.tokens), two local ranks: \(expected.tokens)")
        #expect(across.tokens.count == 12)
    }

    @Test func downRemovesEverythingAfterAFailedRun() throws {
        _ = try NetnsCluster.script(["down", "2"])
        let up = try NetnsCluster.script(["up", "2"])
        try #require(up.status == 0, "\(up.all)")
        // A run that fails (no such model) must leave nothing behind once `down` ran.
        let failed = try NetnsCluster.script(["run", "2", "generate", "-m", "/nonexistent.gguf", "-p", "x", "-n", "1"], timeout: 120)
        #expect(failed.status != 0)
        let down = try NetnsCluster.script(["down", "2"])
        #expect(down.status == 0, "\(down.all)")
        let namespaces = try GemmaNodeBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "list"],
                                                    environment: ProcessInfo.processInfo.environment, timeout: 10)
        #expect(!namespaces.stdout.contains("gn0") && !namespaces.stdout.contains("gn1"), "\(namespaces.stdout)")
        let bridge = try GemmaNodeBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "link", "show", "gnbr0"],
                                                environment: ProcessInfo.processInfo.environment, timeout: 10)
        #expect(bridge.status != 0, "the bridge is still there: \(bridge.stdout)")
    }
}
