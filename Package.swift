// swift-tools-version:6.0
// gemma-node: tensor-parallel Gemma inference over MPI.
// Layers (dependencies point down only):
//   gemma-node (CLI) -> GemmaServer -> GemmaEngine -> GemmaWire/GemmaTokenizer/GemmaModel
//   -> GemmaParallel -> GemmaKernels; GemmaMPI (+CMPI) is the only code that knows MPI exists.
import Foundation
import PackageDescription

/// Release builds of the C kernels get -O3; debug builds also get -O2 so `swift test`
/// does not run scalar-slow kernels (SwiftPM compiles C at -O0 in debug otherwise).
let kernelCFlags: [CSetting] = [
    .unsafeFlags(["-O3"], .when(configuration: .release)),
    .unsafeFlags(["-O2"], .when(configuration: .debug)),
]
let swiftFast: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "gemma-node",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "gemma-node", targets: ["gemma-node"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // GemmaServer imports these directly (logger, channel types, service lifecycle); they
        // come with Hummingbird, and are declared so every import names its dependency.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C shims
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CWire", exclude: ["proto"], linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(name: "CKernels", cSettings: kernelCFlags),

        // Swift layers
        .target(name: "GemmaKernels", dependencies: ["CKernels"], swiftSettings: swiftFast),
        .target(name: "GemmaParallel", dependencies: ["GemmaKernels"], swiftSettings: swiftFast),
        // File formats: GGUF, safetensors (memory-mapped, sliced reads). No model semantics.
        .target(name: "GemmaFormats", dependencies: ["GemmaKernels"], swiftSettings: swiftFast),
        .target(name: "GemmaModel", dependencies: ["GemmaParallel", "GemmaKernels", "GemmaFormats"], swiftSettings: swiftFast),
        .target(name: "GemmaTokenizer", dependencies: ["CWire", "GemmaFormats"]),
        .target(name: "GemmaWire", dependencies: ["CWire"]),
        .target(name: "GemmaEngine", dependencies: ["GemmaModel", "GemmaParallel", "GemmaWire", "GemmaTokenizer", "GemmaFormats"], swiftSettings: swiftFast),
        .target(name: "GemmaMPI", dependencies: ["CMPI", "GemmaParallel"]),
        // OpenAI-compatible HTTP API on rank 0 (Hummingbird), driving the engine's scheduler.
        .target(name: "GemmaServer", dependencies: [
            "GemmaEngine", "GemmaTokenizer", "GemmaWire", .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(
            name: "gemma-node",
            dependencies: [
                "GemmaEngine", "GemmaServer", "GemmaMPI", "GemmaModel", "GemmaParallel", "GemmaWire", "GemmaTokenizer", "GemmaKernels", "GemmaFormats",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftFast
        ),

        // Every parser of outside bytes as a fuzz target (Scripts/fuzz.sh); the corpus replay
        // test runs the committed seeds and past crashes through them in every test run.
        .target(name: "GemmaFuzz", dependencies: [
            "GemmaEngine", "GemmaFormats", "GemmaModel", "GemmaParallel", "GemmaServer", "GemmaTokenizer", "GemmaWire",
        ]),

        // Tests: GemmaTestSupport holds what the test targets share (fixture paths, the
        // default model and Python environment with clear errors when missing, a seeded RNG).
        .target(name: "GemmaTestSupport", path: "Tests/GemmaTestSupport"),
        .testTarget(name: "GemmaKernelsTests", dependencies: ["GemmaTestSupport", "GemmaKernels", "CKernels"]),
        .testTarget(name: "GemmaParallelTests", dependencies: ["GemmaTestSupport", "GemmaParallel"]),
        .testTarget(name: "GemmaWireTests", dependencies: ["GemmaTestSupport", "GemmaWire"]),
        .testTarget(name: "GemmaFormatsTests", dependencies: ["GemmaTestSupport", "GemmaFormats", "GemmaKernels"]),
        .testTarget(name: "GemmaTokenizerTests", dependencies: ["GemmaTestSupport", "GemmaTokenizer", "GemmaFormats"]),
        .testTarget(name: "GemmaModelTests", dependencies: ["GemmaTestSupport", "GemmaModel", "GemmaParallel", "GemmaFormats", "GemmaKernels"]),
        .testTarget(name: "GemmaEngineTests", dependencies: ["GemmaTestSupport", "GemmaEngine", "GemmaModel", "GemmaParallel", "GemmaWire", "GemmaTokenizer"]),
        .testTarget(name: "GemmaNodeTests", dependencies: ["GemmaTestSupport", "gemma-node"]),
        .testTarget(name: "GemmaServerTests", dependencies: ["GemmaTestSupport", "GemmaServer", "GemmaEngine", "GemmaModel", "GemmaParallel", "GemmaTokenizer"]),
        .testTarget(name: "GemmaFuzzTests", dependencies: ["GemmaTestSupport", "GemmaFuzz"]),
    ]
)

// The libFuzzer driver has no main of its own (libFuzzer supplies it), so it exists only in the
// fuzzing build: GEMMA_NODE_FUZZ=1 swift build --sanitize fuzzer --sanitize address --product gemma-fuzz.
if ProcessInfo.processInfo.environment["GEMMA_NODE_FUZZ"] != nil {
    package.targets.append(.executableTarget(name: "gemma-fuzz", dependencies: ["GemmaFuzz"], path: "Fuzz/gemma-fuzz",
                                             swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
}
