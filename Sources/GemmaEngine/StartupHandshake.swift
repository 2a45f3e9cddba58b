// The start-up handshake every multi-rank command runs before doing real work: each rank
// announces a Hello (protocol version, model fingerprint, world), and all ranks refuse to
// start, with the same message, if any rank was built from another commit or loaded
// another model. Also: a cheap fingerprint of a model file or directory.
import Foundation
import GemmaParallel
import GemmaWire

/// Marks errors that every rank raises identically, at the same point, because they are
/// computed from data all ranks hold (argv, a broadcast message). `ClusterSession` treats them
/// like agreed errors: printed by every rank, exit 1, no `MPI_Abort`. Never conform an error
/// that only some ranks can see (file I/O, memory): pass those through `Communicator.agree`.
public protocol SameOnEveryRankError: Error {}

/// A `SameOnEveryRankError` with a plain message (the handshake's verdict, for example).
public struct ClusterFailure: SameOnEveryRankError, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A local problem before the handshake (bad test override, missing model); always passed
/// through `agree`.
public struct HandshakeSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

public enum StartupHandshake {
    /// Test hook: `V` gives every rank of this process protocol version V; `R:V` gives only
    /// rank R version V (one mpirun can then play a stale rank). Read only here.
    public static let versionOverrideVariable = "GEMMA_NODE_PROTOCOL_VERSION_OVERRIDE"
    /// Test hook with the same syntax for the model fingerprint.
    public static let fingerprintOverrideVariable = "GEMMA_NODE_FINGERPRINT_OVERRIDE"

    /// Runs the handshake and returns every rank's Hello in rank order.
    ///
    /// The exchange itself is frozen across protocol versions: each rank in rank order
    /// broadcasts its encoded Hello (Hello field numbers never change), so a rank from another
    /// commit still takes part and is named in the error. Every rank then checks all Hellos
    /// against the coordinator's with `checkHello` and, holding the same bytes, reaches the
    /// same verdict.
    public static func run(_ comm: any Communicator, modelFingerprint: String, threads: Int,
                           host: String = ProcessInfo.processInfo.hostName,
                           environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [Hello] {
        Activity.set(.handshake)
        defer { Activity.set(.loading) }
        // A bad override can exist on one rank only: agree on it.
        let version: UInt32 = try comm.agreeOn {
            guard let value = override(environment[versionOverrideVariable], rank: comm.rank) else { return WireProtocol.version }
            guard let parsed = UInt32(value) else {
                throw HandshakeSetupError(description: "\(versionOverrideVariable)=\(value) is not a version number")
            }
            return parsed
        }
        let fingerprint = override(environment[fingerprintOverrideVariable], rank: comm.rank) ?? modelFingerprint
        let mine = Hello(protocolVersion: version, modelFingerprint: fingerprint, rank: UInt32(comm.rank),
                         worldSize: UInt32(comm.size), host: host, threads: UInt32(clamping: threads))
        let encoded = mine.encode()
        var received: [[UInt8]] = []
        for root in 0..<comm.size {
            received.append(try comm.broadcast(encoded, root: root, idle: false))
        }
        var hellos: [Hello] = []
        for (r, bytes) in received.enumerated() {
            do {
                hellos.append(try Hello.decode(bytes))
            } catch {
                throw ClusterFailure(description: "rank \(r) sent an unreadable Hello (\(error)); rebuild all ranks from the same commit")
            }
        }
        for (r, hello) in hellos.enumerated() {
            if hello.rank != UInt32(r) {
                throw ClusterFailure(description: "the Hello broadcast by rank \(r) claims to be rank \(hello.rank)")
            }
            do {
                try checkHello(local: hellos[0], remote: hello)
            } catch {
                throw ClusterFailure(description: "\(error)")
            }
        }
        return hellos
    }

    /// The handshake for a model on disk: every rank fingerprints its own copy (a missing
    /// file on one rank is agreed, so every rank reports it), then `run`. `nil` = no model.
    /// `fromRoot` (`--weights-from-root`): only rank 0 has the files; its fingerprint is every rank's.
    public static func run(_ comm: any Communicator, modelPath: String?, threads: Int, fromRoot: Bool = false) throws -> [Hello] {
        var fingerprint = try comm.agreeOn {
            fromRoot && !comm.isCoordinator ? "" : try modelPath.map(ModelFingerprint.of(path:)) ?? "no model"
        }
        if fromRoot && comm.size > 1 {
            fingerprint = String(decoding: try comm.broadcast(Array(fingerprint.utf8), root: 0, idle: false), as: UTF8.self)
        }
        return try run(comm, modelFingerprint: fingerprint, threads: threads)
    }

    /// `R:V` applies to rank R only; a bare `V` to every rank.
    static func override(_ value: String?, rank: Int) -> String? {
        guard let value, !value.isEmpty else { return nil }
        let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
        if parts.count == 2, let target = Int(parts[0]) {
            return target == rank ? parts[1] : nil
        }
        return value
    }
}

/// A cheap identity of a model on disk, equal on every host that has the same files.
public enum ModelFingerprint {
    /// For a file: `<name> <size> <FNV-1a of its first 4 MiB>` (GGUF and safetensors keep
    /// their headers, which name every tensor with its shape and offset, at the start). For a
    /// directory: the same over config.json and the names and sizes of its weight files.
    public static func of(path: String) throws -> String {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw HandshakeSetupError(description: "model not found: \(path)")
        }
        var hasher = FNV1a()
        if isDirectory.boolValue {
            // Shard directories differ per host (each holds its own rank's file): shards.json,
            // the same on every host, names the source model and the cut.
            let index = url.appendingPathComponent("shards.json")
            if let data = FileManager.default.contents(atPath: index.path) {
                hasher.add(Array(data))
                return "shards \(String(hasher.value, radix: 16))"
            }
            let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            for name in names where name == "config.json" || name.hasSuffix(".safetensors") || name.hasSuffix(".json") {
                let file = url.appendingPathComponent(name)
                let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.uint64Value ?? 0
                hasher.add(Array("\(name) \(size)\n".utf8))
                if name == "config.json" { hasher.add(Array(try Data(contentsOf: file))) }
            }
            return "\(url.lastPathComponent)/ \(String(hasher.value, radix: 16))"
        }
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: 0)
        let head = try handle.read(upToCount: 4 << 20) ?? Data()
        hasher.add(Array(head))
        return "\(url.lastPathComponent) \(size) \(String(hasher.value, radix: 16))"
    }
}

/// 64-bit FNV-1a: tiny and stable across builds (Swift's Hasher is seeded per process).
public struct FNV1a {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    public init() {}
    public mutating func add(_ bytes: [UInt8]) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
    }
}
