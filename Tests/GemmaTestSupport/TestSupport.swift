// What the test targets share: where the committed fixtures are, the default model and the
// project's Python environment (and a clear error when either is missing), and one seeded
// random generator so every run tests the same data.
import Foundation

public enum TestPaths {
    /// The repository's root folder (this file is Tests/GemmaTestSupport/TestSupport.swift).
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Tests/Fixtures/`relative` (fixtures are made by the scripts in Scripts/ and committed).
    public static func fixture(_ relative: String) -> URL {
        root.appendingPathComponent("Tests/Fixtures").appendingPathComponent(relative)
    }

    /// Scripts/`name`.
    public static func script(_ name: String) -> URL { root.appendingPathComponent("Scripts").appendingPathComponent(name) }

    private static var environment: [String: String] { ProcessInfo.processInfo.environment }
    private static var home: String { environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory() }

    /// The default model as the binary resolves it: $GEMMA_NODE_MODEL, else
    /// ~/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf (Scripts/setup.sh puts it there).
    public static var defaultModel: String {
        if let path = environment["GEMMA_NODE_MODEL"], !path.isEmpty { return path }
        return home + "/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf"
    }

    /// The default model's path, or an error that names it and how to get it.
    public static func requireDefaultModel() throws -> String {
        let path = defaultModel
        guard FileManager.default.fileExists(atPath: path) else {
            throw MissingDependency("the default model is missing at \(path): run Scripts/setup.sh (or set GEMMA_NODE_MODEL)")
        }
        return path
    }

    /// The project's Python interpreter (Scripts/venv.sh; Scripts/test.sh exports it as
    /// GEMMA_NODE_PYTHON), never the python3 on PATH with whatever was installed by hand.
    public static func requirePython() throws -> String {
        let path = environment["GEMMA_NODE_PYTHON"].flatMap { $0.isEmpty ? nil : $0 }
            ?? home + "/.cache/gemma-node/venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw MissingDependency("the project's Python environment is missing at \(path) (it holds the openai package): run Scripts/setup.sh, or Scripts/venv.sh test")
        }
        return path
    }
}

/// A test's missing prerequisite: thrown, so the test fails with this message.
public struct MissingDependency: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// SplitMix64: a small seeded generator, so every run tests the same values and a failure
/// reproduces.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits.
    public mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// Uniform in [0, 1) with 53 bits.
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Float {
        let u = max(uniform(), 1e-7), v = uniform()
        return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * .pi * v)
    }

    /// `n` values uniform in [-scale, scale).
    public mutating func floats(_ n: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in (uniform() * 2 - 1) * scale }
    }
}
