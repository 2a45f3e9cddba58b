// The command-side front end of the engine without a binary: the generation session streams
// the same tokens the single-process reference gives at 1, 2 and 4 in-process ranks, and the
// start-up handshake refuses mismatched builds and models with one message on every rank.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaWire

@Suite struct GenerationSessionTests {
    struct Outcome: Sendable, Equatable {
        var streamed: [[Int32]] = []
        var results: [GenerationResult] = []
        var steps = 0
    }

    /// Two requests one after another on one session; the workers leave `serveWorker` when
    /// rank 0 finishes.
    @Test(arguments: [1, 2, 4])
    func streamsTheReferenceTokens(ranks: Int) throws {
        let sampled = SamplingParams(temperature: 0.9, topK: 20, topP: 0.9, minP: 0.02, seed: 77)
        let requests = [
            GenerationRequest(id: 1, promptTokens: Array(1...11).map(Int32.init), maxNewTokens: 7, sampling: .greedy),
            GenerationRequest(id: 2, promptTokens: [4, 5], maxNewTokens: 9, sampling: sampled, stopTokens: [3]),
        ]
        let out = try LocalCommunicator.run(ranks: ranks) { comm -> Outcome? in
            let model = ToyModel(rank: comm.rank, ranks: comm.size)
            let session = try GenerationSession(model: model, comm: comm)
            guard comm.isCoordinator else {
                try session.serveWorker()
                return nil
            }
            var outcome = Outcome()
            for r in requests {
                var streamed: [Int32] = []
                outcome.results.append(try session.generate(r) { streamed.append($0) })
                outcome.streamed.append(streamed)
            }
            outcome.steps = session.timings.steps
            try session.finish()
            return outcome
        }
        let outcome = try #require(out[0])
        for r in out.dropFirst() { #expect(r == nil) }
        for (i, r) in requests.enumerated() {
            let want = ToyModel.referenceGenerate(prompt: r.promptTokens, n: r.maxNewTokens, settings: r.sampling,
                                                  vocab: 96, sampleable: 96, stop: r.stopTokens)
            #expect(outcome.results[i].tokens == want, "request \(i)")
            #expect(outcome.streamed[i] == want, "request \(i)")
        }
        #expect(outcome.steps > 0)
    }

    /// A request the scheduler refuses throws on rank 0 before any plan; `fail` then ends
    /// every rank with that error.
    @Test(arguments: [1, 3])
    func refusedRequestEndsEveryRankWithOneMessage(ranks: Int) throws {
        let messages = try LocalCommunicator.run(ranks: ranks) { comm -> String in
            let model = ToyModel(rank: comm.rank, ranks: comm.size)
            let session = try GenerationSession(model: model, comm: comm)
            do {
                guard comm.isCoordinator else {
                    try session.serveWorker()
                    return "no error"
                }
                do {
                    _ = try session.generate(GenerationRequest(id: 5, promptTokens: [1, 500], maxNewTokens: 2, sampling: .greedy))
                } catch {
                    try session.fail(error)
                }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        let expected = ranks == 1 ? "token id 500 is outside the vocabulary (0..<96)"
                                  : "rank 0: token id 500 is outside the vocabulary (0..<96)"
        #expect(messages.allSatisfy { $0.hasSuffix("token id 500 is outside the vocabulary (0..<96)") })
        #expect(messages.dropFirst().allSatisfy { $0 == expected })
    }

    @Test func stopRulesAddTheEndOfTurnForChatOnly() {
        let model = ToyModel(rank: 0, ranks: 1)
        #expect(ModelSession.stopTokens(model).isEmpty)
        #expect(ModelSession.stopTokens(model, tokenizer: nil, chat: true).isEmpty)
        #expect(ModelSession.architecture(model) == "gemma")
    }

    // MARK: - Start-up handshake

    enum Handshake: Sendable, Equatable {
        case ok([Hello])
        case failed(String)
    }

    /// Every rank's Hellos in rank order, or its error text.
    func handshake(ranks: Int, fingerprint: @escaping @Sendable (Int) -> String,
                   environment: [String: String] = [:]) throws -> [Handshake] {
        try LocalCommunicator.run(ranks: ranks) { comm -> Handshake in
            do {
                return .ok(try StartupHandshake.run(comm, modelFingerprint: fingerprint(comm.rank), threads: 2,
                                                    host: "host\(comm.rank)", environment: environment))
            } catch {
                return .failed("\(error)")
            }
        }
    }

    @Test func handshakeAgreesOnOneModel() throws {
        let out = try handshake(ranks: 3, fingerprint: { _ in "model 42 abc" })
        for r in out {
            guard case .ok(let hellos) = r else { Issue.record("\(r)"); continue }
            #expect(hellos.map(\.rank) == [0, 1, 2])
            #expect(hellos.map(\.host) == ["host0", "host1", "host2"])
            #expect(hellos.allSatisfy { $0.modelFingerprint == "model 42 abc" && $0.worldSize == 3 && $0.threads == 2 })
        }
    }

    @Test func handshakeRefusesAnotherModelOnEveryRank() throws {
        let out = try handshake(ranks: 3, fingerprint: { $0 == 2 ? "other 1 f" : "model 42 abc" })
        let text = "rank 2 loaded model \"other 1 f\", coordinator loaded \"model 42 abc\"; start every rank with the same model file"
        #expect(out == Array(repeating: .failed(text), count: 3))
    }

    @Test func handshakeRefusesAnotherProtocolVersion() throws {
        let out = try handshake(ranks: 2, fingerprint: { _ in "m" },
                                environment: [StartupHandshake.versionOverrideVariable: "1:\(WireProtocol.version + 1)"])
        let text = "rank 1 speaks protocol version \(WireProtocol.version + 1), coordinator speaks \(WireProtocol.version); "
            + "rebuild all ranks from the same commit"
        #expect(out == Array(repeating: .failed(text), count: 2))
    }

    @Test func fingerprintFollowsTheFileHeadAndSize() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fingerprint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.gguf"), b = dir.appendingPathComponent("b.gguf")
        try Data("GGUF header one".utf8).write(to: a)
        try Data("GGUF header two".utf8).write(to: b)
        let fa = try ModelFingerprint.of(path: a.path)
        #expect(fa == (try ModelFingerprint.of(path: a.path)))
        #expect(fa.hasPrefix("a.gguf 15 "))
        #expect(fa.dropFirst(2) != (try ModelFingerprint.of(path: b.path)).dropFirst(2))
        #expect(throws: HandshakeSetupError.self) { try ModelFingerprint.of(path: dir.appendingPathComponent("missing").path) }
    }
}
