// Bad input is a clear, typed error: impossible splits refused at plan time, truncated and
// inconsistent checkpoints (edited copies in a temp dir), tokens outside the vocabulary,
// positions beyond the context, unknown slots; and the same text on every rank.
import Foundation
import Testing
@testable import GemmaModel
import GemmaFormats
import GemmaParallel
import GemmaKernels

/// A copy of a fixture directory in a fresh temp dir, removed by the caller.
func copyFixture(_ name: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-model-\(UUID().uuidString)")
    try FileManager.default.copyItem(at: hfFixtures.appendingPathComponent(name), to: dir)
    return dir
}

/// Rewrites a safetensors file's header with `edit` (data offsets are relative to the end of
/// the header, so the data stays valid whatever the new header length).
func editHeader(_ file: URL, _ edit: (inout [String: Any]) -> Void) throws {
    let data = try Data(contentsOf: file)
    let n = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    var header = try #require(try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + Int(n)))) as? [String: Any])
    edit(&header)
    let json = try JSONSerialization.data(withJSONObject: header)
    var out = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(json)
    out.append(data.subdata(in: (8 + Int(n))..<data.count))
    try out.write(to: file)
}

func loadError(_ dir: URL, ranks: Int = 1) -> String? {
    do {
        _ = try LocalCommunicator.run(ranks: ranks) { comm in
            _ = try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32))
            return 0
        }
        return nil
    } catch {
        return String(describing: error)
    }
}

@Suite("Bad input")
struct BadInputTests {
    /// --kv-type q8_0 stores 32-value blocks: the fixtures' head dim 16 is refused at load with
    /// the layer and the types that would work, on every rank alike; f16 and f32 load.
    @Test func q8_0CacheRefusesAHeadDimOf16() throws {
        let dir = hfFixtures.appendingPathComponent("gemma3_pattern")
        let messages = try LocalCommunicator.run(ranks: 2) { comm -> String in
            do {
                _ = try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32, kvType: .q8_0))
                return "loaded"
            } catch { return String(describing: error) }
        }
        #expect(messages[0] == messages[1])
        #expect(messages[0].contains("--kv-type q8_0 stores blocks of 32 values, but layer 0 has head dim 16"), "\(messages[0])")
        #expect(messages[0].contains("use --kv-type f16 or f32"))
        for type in [KVCacheType.f16, .f32] {
            let loaded = try LocalCommunicator.run(ranks: 1) { comm in
                try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32, kvType: type)).cache.type
            }
            #expect(loaded == [type])
        }
    }

    /// Ranks asking for different cache types are refused before loading, with the same text
    /// on every rank.
    @Test func ranksMustAgreeOnTheKVType() throws {
        let dir = hfFixtures.appendingPathComponent("gemma3_pattern")
        let messages = try LocalCommunicator.run(ranks: 2) { comm -> String in
            do {
                _ = try GemmaShard.load(directory: dir, comm: comm,
                                        options: GemmaLoadOptions(maxContext: 32, kvType: comm.rank == 0 ? .f16 : .f32))
                return "loaded"
            } catch { return String(describing: error) }
        }
        #expect(messages[0] == messages[1])
        #expect(messages[0].contains("ranks disagree on --kv-type (rank order: f16, f32)"), "\(messages[0])")
    }

    @Test func indivisibleHeadsRefusedAtPlanTime() throws {
        let config = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma3_pattern"))
        #expect(throws: ShardPlanError.indivisible(dimension: "num_attention_heads (layer 0)", size: 4, ranks: 3, unit: 1)) {
            try ShardPlan(config: config, ranks: 3)
        }
        // Through the loader, every rank reports it.
        let message = try #require(loadError(hfFixtures.appendingPathComponent("gemma3_pattern"), ranks: 3))
        #expect(message.contains("cannot split num_attention_heads (layer 0) = 4 evenly across 3 ranks"), "\(message)")
    }

    @Test func truncatedSafetensors() throws {
        let dir = try copyFixture("gemma3_pattern")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("model.safetensors")
        let size = try #require(try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int)
        let handle = try FileHandle(forWritingTo: file)
        try handle.truncate(atOffset: UInt64(size - 100))
        try handle.close()
        #expect {
            try SafetensorsArchive(directory: dir)
        } throws: { error in
            guard case let SafetensorsError.truncated(f, tensor, needed, fileSize) = error else { return false }
            return f.hasSuffix("model.safetensors") && !tensor.isEmpty && needed == size && fileSize == size - 100
        }
        let message = try #require(loadError(dir, ranks: 2))
        #expect(message.contains("is truncated: tensor "), "\(message)")
    }

    @Test func wrongShapeMissingAndUnexpectedTensors() throws {
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("wrong shape", { h in
                var e = (h["model.layers.2.self_attn.q_norm.weight"] as? [String: Any]) ?? [:]
                e["shape"] = [4, 4]  // same byte count, so only the table can catch it
                h["model.layers.2.self_attn.q_norm.weight"] = e
            }, "tensor model.layers.2.self_attn.q_norm.weight has shape [4, 4], expected [16]"),
            ("missing", { h in h["model.layers.6.mlp.up_proj.weight"] = nil },
             "tensor model.layers.6.mlp.up_proj.weight is missing"),
            ("unexpected", { h in h["model.layers.0.self_attn.extra.weight"] = h["model.norm.weight"] },
             "unexpected tensor model.layers.0.self_attn.extra.weight"),
        ]
        for (what, edit, expected) in cases {
            let dir = try copyFixture("gemma3_pattern")
            defer { try? FileManager.default.removeItem(at: dir) }
            try editHeader(dir.appendingPathComponent("model.safetensors"), edit)
            let message = loadError(dir, ranks: 2)
            #expect(message?.contains(expected) == true, "\(what): \(message ?? "loaded")")
        }
    }

    @Test func gemma4MoEWithoutExpertSizesRefusedByName() throws {
        #expect { _ = try parse(#"{"model_type": "gemma4_text", "num_hidden_layers": 2, "enable_moe_block": true, "num_experts": 8}"#) } throws: { error in
            String(describing: error).contains("enable_moe_block needs num_experts > 0, 0 < top_k_experts")
        }
    }

    @Test func forwardInputErrorsAreTypedAndLeaveTheCacheAlone() throws {
        let dir = hfFixtures.appendingPathComponent("gemma2_softcap")
        let outcomes = try LocalCommunicator.run(ranks: 2) { comm -> [String] in
            let model = try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 8, slots: 2, maxBatchTokens: 4))
            var errors: [String] = []
            func attempt(_ batch: [BatchEntry]) {
                do { _ = try model.forward(batch) } catch { errors.append(String(describing: error)) }
            }
            attempt([BatchEntry(slot: 0, token: 256, position: 0, wantLogits: true)])
            attempt([BatchEntry(slot: 0, token: -1, position: 0, wantLogits: true)])
            attempt([BatchEntry(slot: 2, token: 5, position: 0, wantLogits: true)])
            attempt([BatchEntry(slot: 0, token: 5, position: 3, wantLogits: true)])
            attempt((0..<5).map { BatchEntry(slot: 0, token: 5, position: $0, wantLogits: false) })
            // Fill the context, then one more.
            for p in stride(from: 0, to: 8, by: 4) {
                attempt((p..<(p + 4)).map { BatchEntry(slot: 1, token: 7, position: $0, wantLogits: $0 == p + 3) })
            }
            attempt([BatchEntry(slot: 1, token: 7, position: 8, wantLogits: true)])
            return errors
        }
        #expect(outcomes[0] == outcomes[1])
        #expect(outcomes[0] == [
            GemmaModelError.tokenOutOfVocabulary(token: 256, vocabSize: 256).description,
            GemmaModelError.tokenOutOfVocabulary(token: -1, vocabSize: 256).description,
            GemmaModelError.slotOutOfRange(slot: 2, slots: 2).description,
            GemmaModelError.positionGap(slot: 0, expected: 0, got: 3).description,
            GemmaModelError.batchTooLarge(tokens: 5, maxBatchTokens: 4).description,
            GemmaModelError.positionBeyondContext(slot: 1, position: 8, maxContext: 8).description,
        ])
    }

    /// Releasing a slot and reusing it gives the same logits as a fresh model (nothing stale).
    @Test func releasedSlotStartsClean() throws {
        let expected = try Expected("gemma3_pattern")
        let dir = hfFixtures.appendingPathComponent("gemma3_pattern")
        let diff = try LocalCommunicator.run(ranks: 1) { comm -> Float in
            let model = try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32, maxBatchTokens: 16, kvType: .f32))   // goldens: the f32 cache
            let other: [Int32] = [2, 9, 9, 9, 40, 41, 42, 43, 44, 45]
            _ = try model.forward(other.enumerated().map { BatchEntry(slot: 0, token: $1, position: $0, wantLogits: false) })
            model.release(slot: 0)
            let slice = try model.forward(expected.promptTokens.enumerated().map { BatchEntry(slot: 0, token: $1, position: $0, wantLogits: true) })
            return maxAbsDiff((0..<slice.rows).map { Array(slice.row($0)) }, expected.logits)
        }[0]
        #expect(diff <= logitTolerance)
    }

    /// Two sequences in one step (different slots, a prefill and a decode mixed) match the
    /// sequences run alone.
    @Test func mixedBatchOfTwoSlots() throws {
        let expected = try Expected("gemma2_softcap")
        let dir = hfFixtures.appendingPathComponent("gemma2_softcap")
        let tokens = expected.promptTokens
        let results = try LocalCommunicator.run(ranks: 2) { comm -> [[Float]] in
            let model = try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32, slots: 2, maxBatchTokens: 16, kvType: .f32))   // goldens: the f32 cache
            // Slot 0: first 10 tokens alone.
            _ = try model.forward((0..<10).map { BatchEntry(slot: 0, token: tokens[$0], position: $0, wantLogits: false) })
            // Then one step: slot 0 decodes token 10, slot 1 prefills tokens 0..<6 (interleaved order).
            var batch = [BatchEntry(slot: 1, token: tokens[0], position: 0, wantLogits: false),
                         BatchEntry(slot: 0, token: tokens[10], position: 10, wantLogits: true)]
            batch += (1..<6).map { BatchEntry(slot: 1, token: tokens[$0], position: $0, wantLogits: $0 == 5) }
            let slice = try model.forward(batch)
            return (0..<slice.rows).map { Array(slice.row($0)) }
        }
        let row10 = results[0][0] + results[1][0]
        let row5 = results[0][1] + results[1][1]
        #expect(maxAbsDiff([row10, row5], [expected.logits[10], expected.logits[5]]) <= logitTolerance)
    }
}

@Suite("Untied LM head")
struct UntiedHeadTests {
    /// A checkpoint with its own lm_head.weight (here pointing at the embedding's bytes, so the
    /// expected logits stay valid) loads it vocab-parallel; untied without one is refused.
    @Test func separateHeadIsUsedAndRequired() throws {
        let expected = try Expected("gemma2_softcap")
        let dir = try copyFixture("gemma2_softcap")
        defer { try? FileManager.default.removeItem(at: dir) }
        let configURL = dir.appendingPathComponent("config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config["tie_word_embeddings"] = false
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        #expect(loadError(dir)?.contains("tie_word_embeddings is false but the checkpoint has no lm_head.weight") == true)

        try editHeader(dir.appendingPathComponent("model.safetensors")) { h in h["lm_head.weight"] = h["model.embed_tokens.weight"] }
        let logits = try LocalCommunicator.run(ranks: 2) { comm -> [[Float]] in
            let model = try GemmaShard.load(directory: dir, comm: comm, options: GemmaLoadOptions(maxContext: 32, maxBatchTokens: 16, kvType: .f32))   // goldens: the f32 cache
            #expect(model.lmHead != nil)
            let slice = try model.forward(expected.promptTokens.enumerated().map { BatchEntry(slot: 0, token: $1, position: $0, wantLogits: true) })
            return (0..<slice.rows).map { Array(slice.row($0)) }
        }
        let full = (0..<logits[0].count).map { logits[0][$0] + logits[1][$0] }
        #expect(maxAbsDiff(full, expected.logits) <= logitTolerance)
    }
}
