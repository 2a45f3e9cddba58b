// What `inspect` and `plan` plan: a model file (GGUF or Hugging Face directory, read for its
// headers only) or a config alone (a shipped preset or a config.json), as one function from
// a rank count and optional `--split` shares to a ShardReport.
import ArgumentParser
import Foundation
import GemmaKernels
import GemmaModel

struct ModelPlanSource {
    /// The file or preset, as the user named it.
    let name: String
    /// Plans `ranks` ranks, evenly or by `shares` (one per rank).
    let plan: (_ ranks: Int, _ shares: [Double]?) throws -> ShardReport

    /// `--config NAME|FILE` (planned with every matrix at `weightType`), else `-m PATH`, else
    /// the default model.
    static func resolve(model: String?, configName: String?, quant: String, kvType: KVCacheType, batch: Int) throws -> ModelPlanSource {
        if let configName {
            let config = try loadConfig(configName)
            let (weightType, mix) = PlanQuant.parse(quant) ?? (.bf16, nil)
            return ModelPlanSource(name: configName) { ranks, shares in
                try ShardReport(config: config, ranks: ranks, weightType: weightType, maxBatchTokens: batch, split: shares, kvType: kvType,
                                fileMix: mix)
            }
        }
        let path = model ?? DefaultModel.path().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw InspectError(message: "\(path) is neither a GGUF file nor a Hugging Face model directory")
        }
        let url = URL(fileURLWithPath: path)
        if isDirectory.boolValue {
            return ModelPlanSource(name: path) { ranks, shares in
                try ShardReport(directory: url, ranks: ranks, maxBatchTokens: batch, split: shares, kvType: kvType)
            }
        }
        return ModelPlanSource(name: path) { ranks, shares in
            try ShardReport(gguf: url, ranks: ranks, maxBatchTokens: batch, split: shares, kvType: kvType)
        }
    }

    /// A preset name or a config.json file (or a model directory holding one).
    static func loadConfig(_ name: String) throws -> GemmaConfig {
        do {
            if let preset = try ModelPresets.config(named: name) { return preset }
            if let data = FileManager.default.contents(atPath: name) {
                return try JSONDecoder().decode(GemmaConfig.self, from: data)
            }
            if FileManager.default.fileExists(atPath: name) {
                return try GemmaConfig.load(directory: URL(fileURLWithPath: name))   // a model directory
            }
        } catch {
            throw InspectError(message: "cannot read config \(name): \(error)")
        }
        throw InspectError(message: "unknown preset \"\(name)\" (presets: \(ModelPresets.names.joined(separator: ", "))) and no such config file")
    }

    /// Plans, turning a refusal into a message that names the model and the rank count.
    func report(ranks: Int, shares: [Double]?) throws -> ShardReport {
        do {
            return try plan(ranks, shares)
        } catch {
            throw InspectError(message: "cannot plan \(name) for \(ranks) rank\(ranks == 1 ? "" : "s"): \(error)")
        }
    }
}

/// `--quant` of a planned config: q4_k (every matrix Q4_K), q4_k_m (llama.cpp's Q4_K_M mix,
/// as `synth --quant q4_k` writes it), q8_0 or bf16.
enum PlanQuant {
    static let names = "q4_k, q4_k_m, q8_0 or bf16"

    static func parse(_ name: String) -> (WeightType, SynthQuant?)? {
        switch name.lowercased() {
        case "q4_k": return (.q4_K, nil)
        case "q4_k_m": return (.q4_K, .q4_k)
        case "q8_0": return (.q8_0, nil)
        case "bf16": return (.bf16, nil)
        default: return nil
        }
    }
}

/// A list of machine memories in GB (10^9 bytes), `--fit 8,8,16`.
enum MachineListOption {
    static func parse(_ text: String, flag: String) throws -> [Double] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        let values = parts.map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0!.isFinite && $0! > 0 && $0! < 1e6 }) else {
            throw ValidationError("\(flag) must be positive numbers of GB separated by commas, one per machine in rank order (e.g. 8,8,16 or 7.5,16), got \(text)")
        }
        return values.map { $0! }
    }
}
