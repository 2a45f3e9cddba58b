// `gemma-node shard`: one file per rank holding only that rank's slices, so each host of a
// cluster needs only its own file (plus `shards.json`), and `-m DIR` loads them.
//
// Writing replays the loader: for each rank, GemmaShard.build runs against a recording source
// that notes every request (tensor, rows, columns, or a whole vector) and hands back unread
// zero matrices; the requests then become the tensors of `rank-R-of-N.gguf`, in request
// order, each read from the model and written at its offset. Loading serves the same requests
// from the file, matched exactly by tensor and ranges, so the loaded shard is byte-for-byte
// what every rank reading the model would hold. A file cut for another rank, rank count or
// split is refused by name.
//
// Layout of a shard file (GGUF v3):
//   gemma_node.shard.rank / .ranks (u32), .split (f64 array, empty = even), .manifest (JSON of
//   RootManifest: config, tensors present and their block sizes, stop ids), .slices (one
//   "ordinal rowLo rowHi colLo colHi" string per tensor, -1 for a whole axis; "ordinal v" for
//   a vector), and on rank 0 the tokenizer.* keys of a GGUF source. A Hugging Face source's
//   tokenizer files are copied into the directory beside the shards.
import Foundation
import GemmaFormats
import GemmaKernels
import GemmaParallel

public enum ShardFileError: Error, CustomStringConvertible, Equatable {
    case notFound(directory: String, file: String, present: [String])
    case wrongShard(file: String, reason: String)
    case missingSlice(file: String, tensor: String, rows: String, cols: String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .notFound(d, f, present):
            let have = present.isEmpty ? "no shard files" : present.joined(separator: ", ")
            return "\(d): no \(f) for this rank (the directory holds \(have)); cut shards for this rank count with `gemma-node shard --ranks N`"
        case let .wrongShard(f, r): return "\(f): \(r)"
        case let .missingSlice(f, t, r, c): return "\(f) has no slice of \(t) rows \(r) columns \(c) (cut for a different split?)"
        case let .unsupported(m): return "shard: \(m)"
        }
    }
}

/// What `shard` wrote for one rank.
public struct ShardFileReport: Sendable {
    public var rank: Int
    public var path: String
    public var tensors: Int
    public var dataBytes: Int
}

public enum ShardFiles {
    public static let indexName = "shards.json"
    static let prefix = "gemma_node.shard."

    public static func fileName(rank: Int, ranks: Int) -> String { "rank-\(rank)-of-\(ranks).gguf" }

    /// `shards.json`: the same on every host (the handshake fingerprints it).
    struct Index: Codable, Equatable {
        var format = 1
        var source: String
        var ranks: Int
        var split: [Double]
        var files: [String]
    }

    /// Whether `directory` holds shards (a `shards.json`).
    public static func isShardDirectory(_ directory: URL) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent(indexName).path)
    }

    /// This rank's file in a shard directory (for the tokenizer on rank 0, and messages).
    public static func file(in directory: URL, rank: Int, ranks: Int) -> URL {
        directory.appendingPathComponent(fileName(rank: rank, ranks: ranks))
    }

    /// Rank 0's shard file of a directory cut for any rank count (the tokenizer lives there).
    public static func rankZeroFile(in directory: URL) -> URL? {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(indexName).path),
              let index = try? JSONDecoder().decode(Index.self, from: data) else { return nil }
        return file(in: directory, rank: 0, ranks: index.ranks)
    }

    /// Writes one shard file per rank of `model` split `ranks` ways (`split`: shares, nil =
    /// even) into `directory`, plus `shards.json`. `progress(rank, bytesDone, bytesTotal)`.
    public static func write(model: URL, ranks: Int, split: [Double]?, to directory: URL, sourceFingerprint: String,
                             progress: (Int, Int, Int) -> Void = { _, _, _ in }) throws -> [ShardFileReport] {
        guard ranks >= 1 else { throw ShardFileError.unsupported("--ranks must be at least 1") }
        if let split, split.count != ranks {
            throw ShardFileError.unsupported("--split has \(split.count) shares for \(ranks) ranks")
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let options = GemmaLoadOptions(maxContext: 1, slots: 1, maxBatchTokens: 1, threads: 1, split: split)
        var reports: [ShardFileReport] = []
        for rank in 0..<ranks {
            let opened = try GemmaShard.open(path: model, options: options)
            let plan = try ShardPlan(config: opened.config, ranks: ranks, mlpAlign: opened.mlpAlign, split: split)
            let recorder = RecordingWeightSource(inner: opened.source, config: opened.config)
            _ = try GemmaShard.build(config: opened.config, plan: plan, source: recorder, comm: PlanningCommunicator(rank: rank, size: ranks),
                                     options: options, stopTokens: opened.stopTokens)
            let manifest = try RootStreamedWeightSource.manifest(source: opened.source, config: opened.config, mlpAlign: opened.mlpAlign,
                                                                 stopTokens: opened.stopTokens)
            var w = GGUFWriter()
            try w.add("general.architecture", .string("gemma-node-shard"))
            try w.add(prefix + "rank", .uint32(UInt32(rank)))
            try w.add(prefix + "ranks", .uint32(UInt32(ranks)))
            try w.add(prefix + "split", .array(elementType: .float64, values: (split ?? []).map { .float64($0) }))
            try w.add(prefix + "source", .string(sourceFingerprint))
            try w.add(prefix + "manifest", .string(String(decoding: try JSONEncoder().encode(manifest), as: UTF8.self)))
            try w.add(prefix + "slices", .array(elementType: .string, values: recorder.requests.map { .string($0.key) }))
            if rank == 0, let gguf = (opened.source as? GGUFWeightSource)?.file {
                for key in gguf.metadataKeys where key.hasPrefix("tokenizer.") {
                    if let v = gguf.value(key) { try w.add(key, v) }
                }
            }
            var seen: [String: Int] = [:]
            for request in recorder.requests {
                let base = request.name
                let n = seen[base, default: 0]
                seen[base] = n + 1
                let name = n == 0 ? base : "\(base).\(n)"
                try w.addTensor(GGUFTensorEntry(name: name, dims: [request.cols, request.rows], typeID: request.type.rawValue,
                                                byteCount: request.byteCount))
            }
            let path = file(in: directory, rank: rank, ranks: ranks).path
            let sink = try GGUFFileSink(path: path, writer: w)
            let total = recorder.requests.reduce(0) { $0 + $1.byteCount }
            var done = 0
            for (i, request) in recorder.requests.enumerated() {
                switch request.kind {
                case let .matrix(rows, cols):
                    let m = try opened.source.matrix(request.tensor, rows: rows, cols: cols)
                    try sink.write(tensor: i, at: 0, UnsafeRawBufferPointer(start: m.storage.pointer, count: request.byteCount))
                case .vector:
                    let v = try opened.source.vector(request.tensor)
                    try v.withUnsafeBytes { try sink.write(tensor: i, at: 0, $0) }
                }
                done += request.byteCount
                progress(rank, done, total)
            }
            try sink.close()
            reports.append(ShardFileReport(rank: rank, path: path, tensors: recorder.requests.count, dataBytes: total))
        }
        // A Hugging Face source's tokenizer and generation config travel beside the shards.
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: model.path, isDirectory: &isDirectory), isDirectory.boolValue {
            for name in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "chat_template.jinja"] {
                let from = model.appendingPathComponent(name), to = directory.appendingPathComponent(name)
                guard FileManager.default.fileExists(atPath: from.path) else { continue }
                try? FileManager.default.removeItem(at: to)
                try FileManager.default.copyItem(at: from, to: to)
            }
        }
        let index = Index(source: sourceFingerprint, ranks: ranks, split: split ?? [], files: reports.map { URL(fileURLWithPath: $0.path).lastPathComponent })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(index).write(to: directory.appendingPathComponent(indexName))
        return reports
    }
}

/// Records what the loader asks of a source, returning unread (lazily mapped, zero) matrices
/// of the right type and shape, so a rank's plan costs no weight memory.
final class RecordingWeightSource: ModelWeightSource {
    enum Kind { case matrix(rows: Range<Int>?, cols: Range<Int>?), vector }
    struct Request {
        var tensor: LogicalTensor
        var ordinal: Int
        var name: String
        var kind: Kind
        var type: WeightType
        var rows: Int
        var cols: Int
        var byteCount: Int
        /// The `.slices` entry: how the loader will ask for it.
        var key: String
    }

    let inner: any ModelWeightSource
    var path: String { inner.path }
    private(set) var requests: [Request] = []
    private let specs: [LogicalTensor: (ordinal: Int, spec: TensorSpec)]

    init(inner: any ModelWeightSource, config: GemmaConfig) {
        self.inner = inner
        var specs: [LogicalTensor: (Int, TensorSpec)] = [:]
        for (i, s) in TensorTable.specs(for: config).enumerated() where specs[s.tensor] == nil { specs[s.tensor] = (i, s) }
        self.specs = specs
    }

    func has(_ t: LogicalTensor) -> Bool { inner.has(t) }
    func blockSize(_ t: LogicalTensor) throws -> Int { try inner.blockSize(t) }

    private func entry(_ t: LogicalTensor) throws -> (ordinal: Int, spec: TensorSpec) {
        guard let e = specs[t] else { throw TensorTableError.missing("\(t)") }
        return e
    }

    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix {
        let (ordinal, spec) = try entry(t)
        let type = try inner.storedType(t)
        // The 2-D view of the tensor: [rows, cols] with any leading dims folded into rows.
        let fullCols = spec.shape.last ?? 1
        let fullRows = spec.shape.dropLast().reduce(1, *)
        let r = rows?.count ?? fullRows, c = cols?.count ?? fullCols
        let m = try WeightMatrix(type: type, rows: r, cols: c)
        func bound(_ x: Range<Int>?) -> String { x.map { "\($0.lowerBound) \($0.upperBound)" } ?? "-1 -1" }
        requests.append(Request(tensor: t, ordinal: ordinal, name: spec.ggufName, kind: .matrix(rows: rows, cols: cols), type: type,
                                rows: r, cols: c, byteCount: r * m.rowBytes, key: "\(ordinal) \(bound(rows)) \(bound(cols))"))
        return m
    }

    func vector(_ t: LogicalTensor) throws -> [Float] {
        let (ordinal, spec) = try entry(t)
        let v = try inner.vector(t)
        requests.append(Request(tensor: t, ordinal: ordinal, name: spec.ggufName, kind: .vector, type: .f32,
                                rows: 1, cols: v.count, byteCount: v.count * 4, key: "\(ordinal) v"))
        return v
    }

    func storedType(_ t: LogicalTensor) throws -> WeightType { try inner.storedType(t) }
}

/// The loader's view of a shard file: each request answered by the slice stored for it.
final class ShardFileWeightSource: ModelWeightSource {
    let file: GGUFFile
    var path: String { file.path }
    let manifest: RootManifest
    private var slices: [String: GGUFTensorInfo] = [:]
    private let index: TensorIndex

    /// Opens `directory`'s file for `rank` of `ranks`, refusing one cut for another rank, rank
    /// count or split.
    init(directory: URL, rank: Int, ranks: Int, split: [Double]?) throws {
        let url = ShardFiles.file(in: directory, rank: rank, ranks: ranks)
        guard FileManager.default.fileExists(atPath: url.path) else {
            let present = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
                .filter { $0.hasPrefix("rank-") && $0.hasSuffix(".gguf") }.sorted()
            throw ShardFileError.notFound(directory: directory.path, file: url.lastPathComponent, present: present)
        }
        file = try GGUFFile(path: url.path)
        let p = ShardFiles.prefix
        let name = url.lastPathComponent
        guard let fileRank = file.value(p + "rank")?.intValue, let fileRanks = file.value(p + "ranks")?.intValue else {
            throw ShardFileError.wrongShard(file: name, reason: "not a gemma-node shard file (no \(p)rank)")
        }
        guard fileRank == rank, fileRanks == ranks else {
            throw ShardFileError.wrongShard(file: name, reason: "cut for rank \(fileRank) of \(fileRanks), loaded as rank \(rank) of \(ranks)")
        }
        let fileSplit = ((try? file.floatArray(p + "split")) ?? []).map { Double($0) }
        let asked = split ?? []
        let same = fileSplit.count == asked.count && zip(fileSplit, asked).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) }
        guard same else {
            func text(_ s: [Double]) -> String { s.isEmpty ? "the even split" : "--split " + s.map { String(format: "%g", $0) }.joined(separator: ",") }
            throw ShardFileError.wrongShard(file: name, reason: "cut for \(text(fileSplit)), this run asks for \(text(asked))")
        }
        let manifestText = try file.string(p + "manifest")
        manifest = try RootStreamedWeightSource.decodeManifest(Data(manifestText.utf8))
        let keys = try file.stringArray(p + "slices")
        guard keys.count == file.tensors.count else {
            throw ShardFileError.wrongShard(file: name, reason: "\(keys.count) slice entries for \(file.tensors.count) tensors")
        }
        for (key, info) in zip(keys, file.tensors) { slices[key] = info }
        index = TensorIndex(config: manifest.config)
    }

    func has(_ t: LogicalTensor) -> Bool { manifest.has(t, index) }
    func blockSize(_ t: LogicalTensor) throws -> Int { try manifest.blockSize(t, index) }

    private func stored(_ t: LogicalTensor, _ key: (Int) -> String, rows: String, cols: String) throws -> GGUFTensorInfo {
        guard let o = index.ordinals[t] else { throw TensorTableError.missing("\(t)") }
        guard let info = slices[key(o)] else {
            throw ShardFileError.missingSlice(file: URL(fileURLWithPath: path).lastPathComponent, tensor: index.name(t), rows: rows, cols: cols)
        }
        return info
    }

    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix {
        func bound(_ x: Range<Int>?) -> String { x.map { "\($0.lowerBound) \($0.upperBound)" } ?? "-1 -1" }
        let info = try stored(t, { "\($0) \(bound(rows)) \(bound(cols))" }, rows: bound(rows), cols: bound(cols))
        return try file.weightMatrix(of: info)
    }

    func vector(_ t: LogicalTensor) throws -> [Float] {
        let info = try stored(t, { "\($0) v" }, rows: "all", cols: "all")
        let m = try file.weightMatrix(of: info)
        guard m.type == .f32 else { throw ShardFileError.wrongShard(file: path, reason: "vector stored as \(m.type)") }
        return Array(m.storage.floats(count: m.rows * m.cols))
    }

    func storedType(_ t: LogicalTensor) throws -> WeightType {
        throw ShardFileError.unsupported("a shard file cannot be sharded again")
    }
}

/// The communicator of a rank being planned, not run: the loader only asks its rank and size.
final class PlanningCommunicator: Communicator, @unchecked Sendable {
    let rank: Int
    let size: Int
    init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }
    private func refuse(_ op: String) -> Error {
        CommunicatorError.transport(operation: op, code: -1, message: "no collectives while cutting shard files")
    }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { throw refuse("allReduceSum") }
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws { throw refuse("allReduceMax") }
    func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] { throw refuse("broadcast") }
    func allGather(_ record: [Float]) throws -> [Float] { throw refuse("allGather") }
    func barrier() throws { throw refuse("barrier") }
}
