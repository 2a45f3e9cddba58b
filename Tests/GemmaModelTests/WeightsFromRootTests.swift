// `--weights-from-root`: rank 0 reads the model and streams each rank its slices
// (RootWeightSource.swift). The other ranks get a path that does not exist, so a pass proves
// they read nothing themselves. The weights are the same bytes either way, so the logits must
// be bit-identical to every rank reading the file itself (no tolerance).
import Foundation
import Testing
@testable import GemmaModel
import GemmaKernels
import GemmaParallel
import GemmaTestSupport

@Suite("Weights from root")
struct WeightsFromRootTests {
    static let ggufModels = TestPaths.fixture("gguf_models")
    static let ggufGemma4 = TestPaths.fixture("gguf_gemma4")

    /// (expected-output fixture, model path): HF directories in f32/bf16, GGUF files in
    /// quantized types, Gemma 1, 3 and 4 (PLE, KV sharing, MoE split by columns).
    static let cases: [(String, URL)] = [
        ("gemma1_mqa", hfFixtures.appendingPathComponent("gemma1_mqa")),
        ("gemma3_bf16", hfFixtures.appendingPathComponent("gemma3_bf16")),
        ("gemma4_e_style", hfFixtures.appendingPathComponent("gemma4_e_style")),
        ("gemma4_moe", hfFixtures.appendingPathComponent("gemma4_moe")),
        ("gemma3_pattern", ggufModels.appendingPathComponent("gemma3_pattern_q8.gguf")),
        ("gemma4_e_style", ggufGemma4.appendingPathComponent("gemma4_e_style.gguf")),
    ]

    @Test(arguments: 0..<cases.count, [2, 3])
    func streamedEqualsLocalRead(index: Int, ranks: Int) throws {
        let (name, path) = Self.cases[index]
        // 3 ranks need an uneven split on the 4-head fixtures.
        let split: [Double]? = ranks == 3 ? [1, 1, 1] : nil
        let local: (logits: [[Float]], greedy: [Int32])
        do {
            local = try runFixture(name, ranks: ranks, feeding: .prefill, greedySteps: 8, model: path, split: split)
        } catch {
            // A split the file cannot take (q8_0 blocks cut by 3 ranks' heads) fails alike.
            #expect(throws: Error.self) { _ = try runFixture(name, ranks: ranks, feeding: .prefill, model: path, split: split, weightsFromRoot: true) }
            do { _ = try runFixture(name, ranks: ranks, feeding: .prefill, model: path, split: split, weightsFromRoot: true) } catch let streamedError {
                #expect("\(streamedError)" == "\(error)")
            }
            return
        }
        let streamed = try runFixture(name, ranks: ranks, feeding: .prefill, greedySteps: 8, model: path, split: split, weightsFromRoot: true)
        #expect(streamed.logits == local.logits, "\(path.lastPathComponent) at \(ranks) ranks: max |diff| \(maxAbsDiff(streamed.logits, local.logits))")
        #expect(streamed.greedy == local.greedy)
    }

    /// Every rank's error text, or nil where the load succeeded.
    func rankErrors(_ path: URL, ranks: Int) throws -> [String?] {
        try LocalCommunicator.run(ranks: ranks) { comm -> String? in
            let mine = comm.rank == 0 ? path : URL(fileURLWithPath: "/nonexistent/gemma-node-worker/model")
            do {
                _ = try GemmaShard.load(path: mine, comm: comm, options: GemmaLoadOptions(maxContext: 32, weightsFromRoot: true))
                return nil
            } catch { return "\(error)" }
        }
    }

    @Test func missingFileOnRootFailsEveryRankAlike() throws {
        let errors = try rankErrors(URL(fileURLWithPath: "/nonexistent/root/model.gguf"), ranks: 2)
        let first = try #require(errors[0])
        #expect(errors.allSatisfy { $0 == first }, "\(errors)")
        #expect(first.contains("/nonexistent/root/model.gguf") && first.contains("no such file"), "\(first)")
    }

    /// A file cut short after its header: rank 0's reader refuses it, and every rank reports
    /// rank 0's message (not a hang, not a worker-side decoding error).
    @Test func truncatedFileOnRootFailsEveryRankAlike() throws {
        let source = Self.ggufModels.appendingPathComponent("gemma3_pattern_q8.gguf")
        let data = try Data(contentsOf: source)
        let cut = FileManager.default.temporaryDirectory.appendingPathComponent("wfr-truncated-\(UUID().uuidString).gguf")
        try data.prefix(data.count * 2 / 3).write(to: cut)
        defer { try? FileManager.default.removeItem(at: cut) }
        let errors = try rankErrors(cut, ranks: 3)
        let first = try #require(errors[0])
        #expect(errors.allSatisfy { $0 == first }, "\(errors)")
        #expect(first.contains(cut.lastPathComponent), "\(first)")
    }

    /// The frame a worker receives is checked: a wrong shape or a short payload is an error.
    @Test func malformedFramesAreRefused() throws {
        let m = try WeightMatrix(type: .q8_0, rows: 3, cols: 32)
        for i in 0..<(3 * m.rowBytes) { m.storage.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i * 7 + 1), toByteOffset: i, as: UInt8.self) }
        let frame = RootStreamedWeightSource.encode(m)
        let back = try RootStreamedWeightSource.decode(frame, expectedRows: 0..<3, expectedCols: 0..<32)
        #expect(back.rows == 3 && back.cols == 32 && back.type == m.type)
        #expect(memcmp(back.storage.pointer, m.storage.pointer, 3 * m.rowBytes) == 0)
        #expect(throws: RootStreamError.self) { try RootStreamedWeightSource.decode(Array(frame.dropLast()), expectedRows: nil, expectedCols: nil) }
        #expect(throws: RootStreamError.self) { try RootStreamedWeightSource.decode(frame, expectedRows: 0..<4, expectedCols: nil) }
        #expect(throws: RootStreamError.self) { try RootStreamedWeightSource.decode(Array(frame.prefix(10)), expectedRows: nil, expectedCols: nil) }
    }
}
