// libFuzzer entry points for the fuzz targets in Sources/GemmaFuzz. Built only by
// Scripts/fuzz.sh (GEMMA_NODE_FUZZ=1 swift build --sanitize fuzzer --sanitize address): libFuzzer
// provides main. GEMMA_FUZZ_TARGET names the target; GEMMA_FUZZ_WRITE_SEEDS=DIR writes every
// target's seeds under DIR/<target>/ and exits instead of fuzzing.
import Foundation
import GemmaFuzz

nonisolated(unsafe) var harness: FuzzHarness?

private func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("gemma-fuzz: \(message)\n".utf8))
    exit(2)
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32 {
    let env = ProcessInfo.processInfo.environment
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    if let dir = env["GEMMA_FUZZ_WRITE_SEEDS"] {
        do {
            for target in FuzzTarget.allCases {
                let out = URL(fileURLWithPath: dir).appendingPathComponent(target.rawValue)
                try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
                for (name, bytes) in try FuzzSeeds.seeds(target, fixtures: root.appendingPathComponent("Tests/Fixtures")) {
                    try Data(bytes).write(to: out.appendingPathComponent(name))
                }
            }
        } catch { fail("writing seeds: \(error)") }
        exit(0)
    }
    guard let name = env["GEMMA_FUZZ_TARGET"], let target = FuzzTarget(rawValue: name) else {
        fail("set GEMMA_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    do {
        harness = try FuzzHarness(target: target, resources: FuzzResources(defaultModel: env["GEMMA_NODE_MODEL"]))
    } catch { fail("\(error)") }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    harness?.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
