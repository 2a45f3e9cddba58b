// Cost of one sampling exchange at Gemma 3's real vocabulary (262,144 ids), per settings
// family, with and without log-probabilities, at 1 and 4 in-process ranks. Only runs with GEMMA_NODE_BENCH=1 (build with
// `-c release` for meaningful numbers); prints milliseconds per sampled token.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTestSupport
import GemmaWire

@Suite struct SamplingBenchmark {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] == "1"))
    func samplingCostAtFullVocabulary() throws {
        let vocab = 262_144
        var rng = SplitMix64(seed: 1)
        let row = (0..<vocab).map { _ in rng.normal() * 3 }
        let gemma = SamplingParams(temperature: 1, topK: 64, topP: 0.95, minP: 0, seed: 1)
        let cases: [(String, SamplingParams, Int?)] = [
            ("greedy", .greedy, nil),
            ("top-k 64, top-p 0.95 (Gemma default)", gemma, nil),
            ("k 0, top-p 1 (full Gumbel)", SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1), nil),
            ("k 0, top-p 0.9 (nucleus search)", SamplingParams(temperature: 1, topK: 0, topP: 0.9, minP: 0, seed: 1), nil),
            ("greedy + logprobs", .greedy, 0),
            ("greedy + top_logprobs 5", .greedy, 5),
            ("greedy + top_logprobs 20", .greedy, 20),
            ("Gemma default + top_logprobs 5", gemma, 5),
        ]
        for (label, n) in [("full", vocab), ("quarter", vocab / 4)] {
            for k in [1, 64, 512] {
                let start = DispatchTime.now().uptimeNanoseconds
                var found = 0
                for _ in 0..<10 {
                    found += row.withUnsafeBufferPointer { localTopK(UnsafeBufferPointer(rebasing: $0[0..<n]), firstId: 0, count: k).count }
                }
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e7
                print("localTopK \(label) slice (\(n) ids), k \(k): \(String(format: "%.3f", ms)) ms (\(found / 10) found)")
            }
        }
        for ranks in [1, 4] {
            for (name, settings, logprobs) in cases {
                let reps = 20
                let times = try LocalCommunicator.run(ranks: ranks) { comm -> (Double, Int, Int) in
                    let per = vocab / comm.size
                    let range = (comm.rank * per)..<((comm.rank + 1) * per)
                    let slice = Array(row[range])
                    var stats = SamplingStats()
                    let start = DispatchTime.now().uptimeNanoseconds
                    for step in 0..<reps {
                        _ = try slice.withUnsafeBufferPointer { buf in
                            try DistributedSampler().sample([SampleRequest(row: 0, settings: settings, stepIndex: UInt64(step),
                                                                           logprobs: logprobs)],
                                                            logits: LogitsSlice(vocabRange: range, rows: 1, values: buf),
                                                            sampleableVocab: vocab, comm: comm, stats: &stats)
                        }
                    }
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    return (seconds / Double(reps), stats.rounds / reps, stats.floatsSent * 4 / reps)
                }
                let ms = String(format: "%.3f", times[0].0 * 1000)
                print("sampling \(name), ranks \(ranks): \(ms) ms/token, \(times[0].1) rounds, \(times[0].2) bytes sent per rank")
            }
        }
    }
}
