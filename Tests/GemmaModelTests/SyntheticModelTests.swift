// Synthetic GGUF models (`gemma-node synth`): the quantization plan follows llama.cpp's Q4_K_M
// rule as the real default model shows it; the same seed writes the same bytes and another
// seed other bytes; the `gguf` Python package reads a written file with the tensor names,
// types and shapes we planned; and a written model loads and runs with finite, varied logits
// and per-layer hidden-state RMS in a bounded range.
import Foundation
import Testing
@testable import GemmaModel
import GemmaFormats
import GemmaKernels
import GemmaParallel
import GemmaTestSupport

func synthTempPath(_ tag: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("synth-\(tag)-\(UUID().uuidString).gguf").path
}

@Suite("synthetic models", .serialized)
struct SyntheticModelTests {
    /// llama.cpp's use_more_bits over 18 layers picks exactly the layers whose ffn_down and
    /// attn_v the real Gemma 3 270M Q4_K_M file stores with more bits (Q6_K, or its Q8_0
    /// fallback for 640-wide rows).
    @Test func moreBitsRuleMatchesTheRealFile() throws {
        let f = try GGUFFile(path: try TestPaths.requireDefaultModel())
        let layers = try f.int("gemma3.block_count")
        var realDown: [Int] = [], realV: [Int] = []
        for l in 0..<layers {
            if try f.tensor("blk.\(l).ffn_down.weight").typeID == WeightType.q6_K.rawValue { realDown.append(l) }
            if try f.tensor("blk.\(l).attn_v.weight").typeID == WeightType.q8_0.rawValue { realV.append(l) }
        }
        let rule = (0..<layers).filter { SyntheticModel.useMoreBits($0, layers) }
        #expect(realDown == rule && realV == rule, "real ffn_down \(realDown), attn_v \(realV), rule \(rule)")
        #expect(try f.tensor("token_embd.weight").typeID == WeightType.q8_0.rawValue)   // Q6_K's fallback at 640 columns
    }

    @Test func q4kPlanOfRealSizes() throws {
        let m = try SyntheticModel(preset: "gemma-3-4b", quant: .q4_k)
        func type(_ n: String) -> WeightType? { m.tensors.first { $0.name == n }?.type }
        #expect(m.config.numHiddenLayers == 34 && m.config.vocabSize == 262144)
        #expect(type("token_embd.weight") == .q6_K)
        #expect(type("output_norm.weight") == .f32 && type("blk.3.attn_q_norm.weight") == .f32)
        #expect(type("blk.0.ffn_down.weight") == .q6_K && type("blk.4.ffn_down.weight") == .q4_K && type("blk.5.ffn_down.weight") == .q4_K && type("blk.6.ffn_down.weight") == .q6_K)
        #expect(type("blk.0.attn_v.weight") == .q6_K && type("blk.4.attn_v.weight") == .q4_K && type("blk.33.attn_v.weight") == .q6_K)
        #expect(type("blk.5.attn_q.weight") == .q4_K && type("blk.5.attn_output.weight") == .q4_K && type("blk.5.ffn_up.weight") == .q4_K)
        #expect(!m.tensors.contains { $0.name == "output.weight" })
        // 1152 columns are not whole 256-value super-blocks: llama.cpp's Q5_0 / Q8_0 fallbacks.
        let small = try SyntheticModel(preset: "gemma-3-1b", quant: .q4_k)
        func t1(_ n: String) -> WeightType? { small.tensors.first { $0.name == n }?.type }
        #expect(t1("token_embd.weight") == .q8_0 && t1("blk.1.attn_q.weight") == .q5_0 && t1("blk.0.ffn_down.weight") == .q6_K)
        let e2b = try SyntheticModel(preset: "gemma-4-e2b", quant: .q8_0)
        #expect(e2b.tensors.contains { $0.name == "rope_freqs.weight" && $0.dims == [256] })
        #expect(e2b.tensors.filter { $0.type != .f32 }.allSatisfy { $0.type == .q8_0 })
    }

    @Test func badRequestsAreRefused() throws {
        #expect(throws: SynthError.self) { try SyntheticModel(preset: "gemma-9-xl", quant: .q4_k) }
        do {
            _ = try SyntheticModel(preset: "gemma-9-xl", quant: .q4_k)
        } catch let e as SynthError {
            #expect(e.description.contains("gemma-3-4b") && e.description.contains("gemma-4-e2b"), "\(e)")
        }
        #expect(throws: SynthError.self) { try SyntheticModel(preset: "gemma-3-1b", quant: .q4_k, layers: 27) }
        #expect(throws: SynthError.self) { try SyntheticModel(preset: "gemma-3-1b", quant: .q4_k, layers: 0) }
        #expect(throws: SynthError.self) { try SyntheticModel(preset: "gemma-3-1b", quant: .q4_k, vocab: 10) }
        // --layers on a KV-sharing preset keeps a valid sharing layout.
        let e2b = try SyntheticModel(preset: "gemma-4-e2b", quant: .q4_k, layers: 10)
        #expect(e2b.config.numHiddenLayers == 10 && e2b.config.numKvSharedLayers == 5 && e2b.config.layerTypes.last == .full)
    }

    @Test func sameSeedSameBytesOtherSeedOtherBytes() throws {
        let tok = try GGUFFile(path: try TestPaths.requireDefaultModel())
        let m = try SyntheticModel(preset: "gemma-3-1b", quant: .q4_k, layers: 2, vocab: 512)
        let a = synthTempPath("a"), b = synthTempPath("b"), c = synthTempPath("c")
        defer { for p in [a, b, c] { try? FileManager.default.removeItem(atPath: p) } }
        try m.write(to: a, tokenizer: tok, seed: 7)
        try m.write(to: b, tokenizer: tok, seed: 7)
        try m.write(to: c, tokenizer: tok, seed: 8)
        let da = try Data(contentsOf: URL(fileURLWithPath: a)), db = try Data(contentsOf: URL(fileURLWithPath: b))
        let dc = try Data(contentsOf: URL(fileURLWithPath: c))
        #expect(da.count == (try m.writer(tokenizer: tok).layout().fileSize))
        #expect(da == db)
        #expect(da.count == dc.count && da != dc)
    }

    /// gguf 0.19's own reader on a written file: every tensor's name, GGML type and shape as
    /// planned, the vocabulary cut consistently, the architecture key.
    @Test func pythonGGUFReaderReadsTheFile() throws {
        let python = try TestPaths.requirePython()
        let tok = try GGUFFile(path: try TestPaths.requireDefaultModel())
        let m = try SyntheticModel(preset: "gemma-4-e2b", quant: .q4_k, layers: 6, vocab: 512)
        let path = synthTempPath("py")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try m.write(to: path, tokenizer: tok, seed: 1)
        let script = """
        import json, sys
        try:
            import gguf
        except ImportError:
            sys.exit("the gguf package is missing from this Python environment (Scripts/venv.sh test installs it)")
        r = gguf.GGUFReader(sys.argv[1])
        out = {"tensors": [[t.name, int(t.tensor_type), [int(d) for d in t.shape]] for t in r.tensors],
               "arch": r.fields["general.architecture"].contents(),
               "vocab": len(r.fields["tokenizer.ggml.tokens"].data),
               "scores": len(r.fields["tokenizer.ggml.scores"].data)}
        print(json.dumps(out))
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-c", script, path]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "python gguf reader failed: \(errText)")
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["arch"] as? String == "gemma4")
        #expect(json["vocab"] as? Int == 512 && json["scores"] as? Int == 512)
        let tensors = try #require(json["tensors"] as? [[Any]])
        #expect(tensors.count == m.tensors.count)
        for (got, planned) in zip(tensors, m.tensors) {
            #expect(got[0] as? String == planned.name)
            #expect(got[1] as? Int == Int(planned.type.rawValue), "\(planned.name)")
            #expect(got[2] as? [Int] == planned.dims, "\(planned.name)")
        }
    }

    /// A written model loads, and a prompt's forward pass keeps every layer's hidden state
    /// finite with RMS in [0.2, sqrt(H)] (the embedding gives ~1; each layer adds two post-normed
    /// branches of RMS s = sqrt(H / 8L), so ~sqrt(1 + l H / 4L) is expected, ending near
    /// sqrt(H) / 2), and the logits are finite with a standard deviation above 0.2 and a range
    /// above 2 (a constant or collapsed output fails).
    @Test(arguments: [("gemma-3-4b", 2), ("gemma-3-1b", 8), ("gemma-4-e2b", 6)])
    func activationsStayFiniteAndBounded(preset: String, layers: Int) throws {
        let tok = try GGUFFile(path: try TestPaths.requireDefaultModel())
        let m = try SyntheticModel(preset: preset, quant: .q4_k, layers: layers, vocab: 2048)
        let path = synthTempPath("rms")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try m.write(to: path, tokenizer: tok, seed: 3)
        let prompt: [Int32] = [2, 818, 5279, 529, 7001, 563, 1401, 236761]
        let results = try LocalCommunicator.run(ranks: 1) { comm -> ([Float], [Float]) in
            let model = try GemmaShard.load(path: URL(fileURLWithPath: path), comm: comm, options: GemmaLoadOptions(maxContext: 64, maxBatchTokens: 16))
            var rms: [Float] = []
            model.hiddenStateObserver = { _, buf in
                var s = 0.0
                for v in buf { s += Double(v) * Double(v) }
                rms.append(Float((s / Double(max(1, buf.count))).squareRoot()))
            }
            let slice = try model.forward(prompt.enumerated().map { BatchEntry(slot: 0, token: $1 % 2048, position: $0, wantLogits: $0 == prompt.count - 1) })
            return (rms, Array(slice.row(0)))
        }
        let (rms, logits) = results[0]
        print("\(preset) (\(layers) layers, q4_k) hidden-state RMS per layer: " + rms.map { String(format: "%.2f", $0) }.joined(separator: " "))
        let mean = logits.reduce(0, +) / Float(logits.count)
        let std = (logits.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(logits.count)).squareRoot()
        let range = (logits.max() ?? 0) - (logits.min() ?? 0)
        print("\(preset) logits: mean \(mean) std \(std) min \(logits.min() ?? 0) max \(logits.max() ?? 0)")
        #expect(rms.count == layers + 1)
        let limit = Float(m.config.hiddenSize).squareRoot()
        #expect(rms.allSatisfy { $0.isFinite && $0 >= 0.2 && $0 <= limit }, "\(rms)")
        #expect(logits.count == 2048 && logits.allSatisfy(\.isFinite))
        #expect(std > 0.2 && range > 2, "std \(std) range \(range)")
    }

    /// Decisive routing (`synth --router decisive`, for comparing implementations on the MoE
    /// preset): with the file's own router rows and shared vector, residuals built as the
    /// forward pass builds them (sqrt(H) x (embedding row + shared vector), plus branches of RMS
    /// up to sqrt(H / 4), the last layer's) route every token to the planted experts through
    /// `MoERouter.route`, with the 9th expert at least e^3 less probable than the 8th (a 3-logit
    /// margin: rounding differences between implementations move logits by ~1e-2). Spread
    /// routing, on the same residuals without the shared part, gives routing logits of standard
    /// deviation ~1 and choices that differ between tokens. The embedding bank carries the
    /// shared vector and the final norm blanks its dimensions (so it never reaches the logits).
    @Test func decisiveRoutingPicksThePlantedExpertsByAMargin() throws {
        let seed: UInt64 = 7
        let dec = try SyntheticModel(preset: "gemma-4-26b-a4b", quant: .q4_k, layers: 2, routing: .decisive)
        let spread = try SyntheticModel(preset: "gemma-4-26b-a4b", quant: .q4_k, layers: 2)
        #expect(throws: SynthError.self) { try SyntheticModel(preset: "gemma-3-1b", quant: .q4_k, routing: .decisive) }
        let h = dec.config.hiddenSize, e = try #require(dec.config.numExperts), k = try #require(dec.config.topKExperts)
        let shared = dec.sharedVector(seed: seed)
        let k0 = SyntheticModel.sharedDimensions
        #expect(shared[k0...].allSatisfy { $0 == 0 } && shared[..<k0].allSatisfy { abs($0) == 1 })
        let finalNorm = try #require(dec.floatValues(ofTensor: "output_norm.weight", seed: seed))
        #expect(finalNorm[..<k0].allSatisfy { $0 == 0 } && finalNorm[k0...].allSatisfy { $0 > 0.5 })
        #expect(try #require(spread.floatValues(ofTensor: "output_norm.weight", seed: seed))[..<k0].allSatisfy { $0 > 0.5 })

        // The embedding's first column block comes from a bank whose blocks carry the vector.
        let embed = try #require(dec.tensors.first { $0.name == "token_embd.weight" })
        #expect(embed.initializer == .gaussianShared(std: 1 / Float(h).squareRoot()))
        let bank = try BlockBank(type: embed.type, std: 1 / Float(h).squareRoot(), seed: seed, mean: Array(shared[0..<256]))
        var sums = [Double](repeating: 0, count: 256)
        var block = [Float](repeating: 0, count: 256)
        bank.bytes.withUnsafeBytes { raw in
            for b in 0..<bank.count {
                dequantize(embed.type, raw.baseAddress! + b * bank.unitBytes, count: 256, into: &block)
                for j in 0..<256 { sums[j] += Double(block[j]) }
            }
        }
        let meanError = (0..<256).map { abs(sums[$0] / Double(bank.count) - Double(shared[$0])) }.max() ?? 1
        #expect(meanError < 0.02, "bank column means off the shared vector by \(meanError)")

        var rng = SynthRandom(seed: 99)
        let tokens = 32, branchRMS = (Float(h) / 4).squareRoot()
        func residuals(withShared: Bool) -> [Float] {
            (0..<(tokens * h)).map { i in
                Float(h).squareRoot() * (rng.normal() / Float(h).squareRoot() + (withShared ? shared[i % h] : 0)) + branchRMS * rng.normal()
            }
        }
        let pool = ThreadPool(threads: 1)
        func route(_ m: SyntheticModel, layer: Int, _ x: [Float]) throws -> (indices: [[Int]], probs: [[Float]], logitStd: Float) {
            let w = try #require(m.floatValues(ofTensor: "blk.\(layer).ffn_gate_inp.weight", seed: seed))
            #expect(w.count == e * h)
            let router = try MoERouter(proj: try WeightMatrix.f32(rows: e, cols: h, values: w),
                                       scale: [Float](repeating: 1, count: h), perExpertScale: [Float](repeating: 1, count: e))
            var idx = [Int32](repeating: 0, count: tokens * k), wt = [Float](repeating: 0, count: tokens * k)
            var z = [Float](repeating: 0, count: tokens * h), probs = [Float](repeating: 0, count: tokens * e)
            router.route(x, tokens: tokens, topK: k, eps: 1e-6, indices: &idx, weights: &wt, z: &z, logits: &probs, pool: pool)
            // Logits from the probabilities (softmax is shift-invariant: log p differs by a constant per token).
            var varSum: Float = 0
            for t in 0..<tokens {
                let l = probs[(t * e)..<((t + 1) * e)].map { Foundation.log(max($0, 1e-30)) }
                let mean = l.reduce(0, +) / Float(e)
                varSum += l.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(e)
            }
            return ((0..<tokens).map { t in idx[(t * k)..<((t + 1) * k)].map(Int.init) },
                    (0..<tokens).map { t in Array(probs[(t * e)..<((t + 1) * e)]) }, (varSum / Float(tokens)).squareRoot())
        }
        for layer in 0..<2 {
            let planted = dec.plantedExperts(layer: layer, seed: seed)
            #expect(planted.count == k && Set(planted).count == k && planted.allSatisfy { $0 >= 0 && $0 < e })
            let r = try route(dec, layer: layer, residuals(withShared: true))
            for t in 0..<tokens {
                #expect(r.indices[t].sorted() == planted, "layer \(layer) token \(t): \(r.indices[t].sorted()) against \(planted)")
                let p = r.probs[t].sorted(by: >)
                #expect(p[k - 1] / p[k] > Foundation.exp(3), "layer \(layer) token \(t): margin \(Foundation.log(p[k - 1] / p[k])) logits")
            }
            let s = try route(spread, layer: layer, residuals(withShared: false))
            #expect(s.logitStd > 0.5 && s.logitStd < 2, "spread routing logit std \(s.logitStd)")
            #expect(Set(s.indices.map { $0.sorted() }).count > tokens / 2, "spread routing should vary between tokens")
        }
        #expect(dec.plantedExperts(layer: 0, seed: seed) != dec.plantedExperts(layer: 1, seed: seed))
    }
}
