// Structured output end to end in the engine: in-process ranks (1, 2, 4) over the toy model
// with a synthetic vocabulary (every byte an id of its own plus multi-byte JSON-ish pieces).
// The constraint travels in the plan, every rank masks its own shard, and the outputs are the
// same at every rank count (the mask equals the whole vocabulary's and the draw does not
// depend on the split), parse as JSON and hold to the schema within the token budget.
import Foundation
import GemmaModel
import GemmaParallel
import GemmaWire
import Testing
@testable import GemmaEngine

@Suite struct ConstrainedGenerationTests {
    static let vocabSize = 384

    /// id 0: no bytes (the stop id); 1...255: that byte; the rest: pieces a JSON writer uses.
    static let vocab: VocabularyBytes = {
        let pieces = [#"{""#, #"":"#, #"", ""#, "true", "null", "12", "abc", " ", "\n  ", #""}"#, "]}", #"[""#, "name",
                      "tags", #""a""#, ", ", "0.5", "-", "é", #"\u00"#, "false", "]", "}", "x", #""b"]"#, "3", "age"]
        var tokens: [[UInt8]] = [[]]
        for b in 1...255 { tokens.append([UInt8(b)]) }
        var i = 0
        while tokens.count < vocabSize { tokens.append(Array(pieces[i % pieces.count].utf8)); i += 1 }
        return VocabularyBytes(tokens)
    }()

    static func run(ranks: Int, _ requests: [GenerationRequest], backgroundTables: Bool = false) throws -> (results: [GenerationResult], maskedRows: Int) {
        let out = try LocalCommunicator.run(ranks: ranks) { comm -> ([GenerationResult], Int)? in
            let model = ToyModel(vocabSize: vocabSize, rank: comm.rank, ranks: comm.size, maxContext: 128, slots: 4, maxBatchTokens: 8)
            let executor = StepExecutor(model: model, comm: comm)
            executor.vocabularyBytes = vocab
            if backgroundTables { executor.buildMaskTablesInBackground() }
            guard comm.isCoordinator else {
                try executor.runWorker()
                return nil
            }
            let coordinator = try Coordinator(executor: executor)
            let results = try coordinator.generate(requests)
            try coordinator.shutdown()
            return (results, executor.timings.maskedRows)
        }
        let first = try #require(out[0])
        return first
    }

    func text(_ r: GenerationResult) -> [UInt8] { r.tokens.flatMap { Array(Self.vocab.bytes(of: Int($0))) } }

    @Test func sameValidJSONAtOneTwoAndFourRanks() throws {
        let arrayOfIntegers = #"{"type":"array","items":{"type":"integer"},"minItems":3}"#
        let schemas: [String] = [#"{"type":"object"}"#, personSchema, arrayOfIntegers, personSchema]
        let settings: [SamplingParams] = [
            .greedy,
            SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 0, seed: 5),
            SamplingParams(temperature: 1.5, topK: 40, topP: 0.95, minP: 0, seed: 9),
            SamplingParams(temperature: 0.7, topK: 0, topP: 0.9, minP: 0.01, seed: 11),
        ]
        let budgets = [40, 60, 25, 35]
        let requests = (0..<4).map { i in
            GenerationRequest(id: UInt64(i), promptTokens: [Int32(10 + i), 3, 7], maxNewTokens: budgets[i], sampling: settings[i],
                              stopTokens: [0], grammar: Array(schemas[i].utf8))
        }
        var previous: [[Int32]]?
        for ranks in [1, 2, 4] {
            let (results, masked) = try Self.run(ranks: ranks, requests)
            #expect(masked > 0)
            for (i, r) in results.enumerated() {
                let bytes = text(r)
                let g = try JSONGrammar(schemaText: Array(schemas[i].utf8))
                #expect(g.accepts(bytes), "request \(i) at \(ranks) ranks: \(String(decoding: bytes, as: UTF8.self))")
                #expect(r.tokens.count <= budgets[i])
                let value = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
                switch i {
                case 0: #expect(value is [String: Any])
                case 2:
                    let a = try #require(value as? [Any])
                    #expect(a.count >= 3 && a.allSatisfy { ($0 as? NSNumber).map { $0.doubleValue.rounded() == $0.doubleValue } ?? false })
                default:
                    let o = try #require(value as? [String: Any])
                    #expect(o["name"] is String)
                    let tags = try #require(o["tags"] as? [String])
                    #expect((1...2).contains(tags.count) && tags.allSatisfy { $0 == "a" || $0 == "b" })
                    #expect(Set(o.keys).isSubset(of: ["name", "age", "tags", "kind", "ok", "n", "home"]))
                }
            }
            let tokens = results.map(\.tokens)
            if let previous { #expect(tokens == previous, "\(ranks) ranks differ from 1") }
            previous = tokens
        }
        // Tables built in the background (as serve does) give the same tokens.
        for ranks in [1, 2] {
            let (results, masked) = try Self.run(ranks: ranks, requests, backgroundTables: true)
            #expect(masked > 0 && results.map(\.tokens) == previous, "\(ranks) ranks, background tables")
        }
    }

    /// No constrained sequence in the step: the mask code is never entered.
    @Test func unconstrainedStepsDoNoMaskWork() throws {
        let requests = (0..<3).map { i in
            GenerationRequest(id: UInt64(i), promptTokens: [Int32(20 + i), 4], maxNewTokens: 12, sampling: .greedy, stopTokens: [0])
        }
        let (results, masked) = try Self.run(ranks: 2, requests)
        #expect(masked == 0)
        #expect(results.allSatisfy { !$0.tokens.isEmpty })
    }

    /// A budget too small for any value is refused before anything runs.
    @Test func budgetTooSmallIsRefused() throws {
        let r = GenerationRequest(id: 1, promptTokens: [1, 2], maxNewTokens: 5, sampling: .greedy, grammar: Array(personSchema.utf8))
        #expect(throws: PlanError.self) { try r.validate(PlanLimits(vocabSize: Self.vocabSize, maxContext: 128)) }
    }
}
