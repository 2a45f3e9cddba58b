// `--weights-from-root`: rank 0 alone reads the model file and sends every other rank its
// slices over the communicator, so worker hosts need no copy of the file at all.
//
// The loader (GemmaLoader.build) asks every rank's source for the same tensors in the same
// order, each rank for its own rows and columns. This source turns each request into a
// short collective exchange:
//   1. all-gather every rank's request (tensor ordinal and ranges), so every rank can check
//      that all ranks ask for the same tensor (a mismatch is an error on every rank, not a hang);
//   2. rank 0 reads each worker's slice from its file source and delivers it to that worker
//      alone, one worker at a time: rank 0 holds at most one worker's slice of one tensor
//      (plus its encoded copy) beyond its own share;
//   3. rank 0 broadcasts the outcome, so a read error on rank 0 fails every rank with its text.
// Norm vectors and scalars are broadcast whole. What the loader needs before the first tensor
// (config, which tensors exist, block sizes, stop ids) comes in one manifest broadcast.
import Foundation
import GemmaFormats
import GemmaKernels
import GemmaParallel

/// What rank 0 tells every rank about the checkpoint before any tensor moves.
struct RootManifest: Codable {
    var config: GemmaConfig
    /// Not part of config.json's encoding (GGUF files bake the + 1 into norms): sent apart.
    var normAddsOne: Bool
    /// Ordinals (in `TensorTable.specs(for: config)`) of the tensors the file holds, with the
    /// block size each will be held in.
    var present: [Int: Int]
    var mlpAlign: Int
    var stopTokens: [Int]
}

/// Tensors of a config by ordinal (their first row in `TensorTable.specs(for:)`): how requests
/// and manifests name a tensor without sending the enum.
struct TensorIndex {
    let ordinals: [LogicalTensor: Int]
    let names: [Int: String]
    let shapes: [Int: [Int]]

    init(config: GemmaConfig) {
        var ordinals: [LogicalTensor: Int] = [:], names: [Int: String] = [:], shapes: [Int: [Int]] = [:]
        for (i, spec) in TensorTable.specs(for: config).enumerated() where ordinals[spec.tensor] == nil {
            ordinals[spec.tensor] = i
            names[i] = spec.name
            shapes[i] = spec.shape
        }
        self.ordinals = ordinals
        self.names = names
        self.shapes = shapes
    }

    func name(_ t: LogicalTensor) -> String { ordinals[t].flatMap { names[$0] } ?? "\(t)" }
}

extension RootManifest {
    func has(_ t: LogicalTensor, _ index: TensorIndex) -> Bool { index.ordinals[t].map { present[$0] != nil } ?? false }

    func blockSize(_ t: LogicalTensor, _ index: TensorIndex) throws -> Int {
        guard let o = index.ordinals[t], let b = present[o] else { throw TensorTableError.missing("\(t)") }
        return b
    }
}

/// Load errors specific to streaming weights from rank 0.
public enum RootStreamError: Error, CustomStringConvertible, Equatable {
    /// Rank 0 could not open or read the model; the text is rank 0's error.
    case root(String)
    /// Ranks asked for different tensors at the same step (a loader bug, reported not hung).
    case mismatchedRequest(rank: Int, tensor: String)
    case badFrame(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .root(m): return m
        case let .mismatchedRequest(r, t): return "--weights-from-root: rank \(r) asked for a different tensor than rank 0 (\(t))"
        case let .badFrame(m): return "--weights-from-root: malformed slice from rank 0: \(m)"
        case let .unsupported(m): return "--weights-from-root: \(m)"
        }
    }
}

final class RootStreamedWeightSource: ModelWeightSource {
    let path: String
    let comm: any Communicator
    /// The file source (rank 0 only).
    let local: (any ModelWeightSource)?
    let manifest: RootManifest
    private let index: TensorIndex
    /// Bytes of slices this rank sent (rank 0) or received (workers).
    private(set) var bytesMoved = 0
    /// Largest piece rank 0 encoded to send (its transient buffer, held twice, beyond its share).
    private(set) var largestPiece = 0
    /// Values per piece of a worker's slice (GemmaLoadOptions.streamPieceValues).
    var chunkValues = 1 << 22

    /// Every rank calls this together: rank 0 opens `path` with `open`, and its manifest (or
    /// its error) reaches every rank.
    static func connect(path: String, comm: any Communicator,
                        open: () throws -> (source: any ModelWeightSource, config: GemmaConfig, mlpAlign: Int, stopTokens: [Int])) throws -> RootStreamedWeightSource {
        var message: [UInt8] = []
        var local: (any ModelWeightSource)?
        if comm.rank == 0 {
            var reply: [UInt8]
            do {
                let opened = try open()
                local = opened.source
                let manifest = try manifest(source: opened.source, config: opened.config, mlpAlign: opened.mlpAlign,
                                            stopTokens: opened.stopTokens)
                let encoded = try JSONEncoder().encode(manifest)
                // Workers rebuild the config from this text: it must come back identical.
                guard try decodeManifest(encoded).config == opened.config else {
                    throw RootStreamError.unsupported("this model's config does not survive its JSON encoding; every rank needs the file")
                }
                reply = [1] + Array(encoded)
            } catch {
                reply = [0] + Array("\(error)".utf8)
            }
            message = reply
        }
        let received = try comm.broadcast(message, root: 0, idle: false)
        guard let status = received.first else { throw RootStreamError.badFrame("empty manifest") }
        let body = Data(received.dropFirst())
        guard status == 1 else { throw RootStreamError.root(String(decoding: body, as: UTF8.self)) }
        return RootStreamedWeightSource(path: path, comm: comm, local: local, manifest: try decodeManifest(body))
    }

    /// What a worker needs to know about `source` before its first tensor.
    static func manifest(source: any ModelWeightSource, config: GemmaConfig, mlpAlign: Int, stopTokens: [Int]) throws -> RootManifest {
        var present: [Int: Int] = [:], seen = Set<LogicalTensor>()
        for (i, spec) in TensorTable.specs(for: config).enumerated() where seen.insert(spec.tensor).inserted && source.has(spec.tensor) {
            present[i] = try source.blockSize(spec.tensor)
        }
        return RootManifest(config: config, normAddsOne: config.normAddsOne, present: present, mlpAlign: mlpAlign, stopTokens: stopTokens)
    }

    static func decodeManifest(_ data: Data) throws -> RootManifest {
        var manifest: RootManifest
        do { manifest = try JSONDecoder().decode(RootManifest.self, from: data) } catch {
            throw RootStreamError.badFrame("manifest: \(error)")
        }
        manifest.config.normAddsOne = manifest.normAddsOne
        return manifest
    }

    private init(path: String, comm: any Communicator, local: (any ModelWeightSource)?, manifest: RootManifest) {
        self.path = path
        self.comm = comm
        self.local = local
        self.manifest = manifest
        index = TensorIndex(config: manifest.config)
    }

    func has(_ t: LogicalTensor) -> Bool { manifest.has(t, index) }
    func blockSize(_ t: LogicalTensor) throws -> Int { try manifest.blockSize(t, index) }

    func storedType(_ t: LogicalTensor) throws -> WeightType {
        throw RootStreamError.unsupported("the stored type of a streamed tensor is known only when it arrives")
    }

    /// Request records travel as floats (the all-gather's type): exact for integers below 2^24.
    private static let exactLimit = 1 << 24

    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix {
        guard let id = index.ordinals[t] else { throw TensorTableError.missing("\(t)") }
        let fields = [id, rows?.lowerBound ?? -1, rows?.upperBound ?? -1, cols?.lowerBound ?? -1, cols?.upperBound ?? -1]
        guard fields.allSatisfy({ $0 < Self.exactLimit }) else {
            throw RootStreamError.unsupported("a range of \(index.names[id] ?? "\(t)") exceeds \(Self.exactLimit)")
        }
        let all = try comm.allGather(fields.map(Float.init))
        let n = fields.count
        for q in 0..<comm.size where Int(all[q * n]) != id {
            throw RootStreamError.mismatchedRequest(rank: q, tensor: index.names[id] ?? "\(t)")
        }
        func range(_ q: Int, _ k: Int) -> Range<Int>? {
            let lo = Int(all[q * n + k]), hi = Int(all[q * n + k + 1])
            return lo < 0 ? nil : lo..<hi
        }

        // Each worker's slice goes in pieces of whole rows, at most `chunkValues` values each,
        // so rank 0 never holds more than one piece (and its encoded copy) beyond its own
        // share. Every rank derives the same pieces from the gathered requests and the table
        // shape, so every rank takes part in the same deliveries.
        let shape = index.shapes[id] ?? []
        func pieces(_ q: Int) -> [Range<Int>?] {
            guard let rowRange = range(q, 1) ?? (shape.count == 2 ? 0..<shape[0] : nil) else { return [nil] }
            let columns = range(q, 3)?.count ?? shape.last ?? 1
            let step = max(1, chunkValues / max(columns, 1))
            if rowRange.isEmpty { return [rowRange] }
            return stride(from: rowRange.lowerBound, to: rowRange.upperBound, by: step).map { $0..<min($0 + step, rowRange.upperBound) }
        }

        if comm.rank == 0 {
            guard let local else { throw RootStreamError.badFrame("rank 0 has no file source") }
            var failure: String?
            var mine: WeightMatrix?
            do { mine = try local.matrix(t, rows: range(0, 1), cols: range(0, 3)) } catch { failure = "\(error)" }
            for q in 1..<comm.size {
                for piece in pieces(q) {
                    var out: [UInt8] = []
                    if failure == nil {
                        do {
                            out = Self.encode(try local.matrix(t, rows: piece, cols: range(q, 3)))
                            largestPiece = max(largestPiece, out.count)
                            bytesMoved += out.count
                        } catch { failure = "\(error)" }
                    }
                    _ = try comm.deliver(out, from: 0, to: q)
                }
            }
            _ = try comm.broadcast(failure.map { Array($0.utf8) } ?? [], root: 0, idle: false)
            if let failure { throw RootStreamError.root(failure) }
            guard let mine else { throw RootStreamError.badFrame("no slice for rank 0") }
            return mine
        }
        // `deliver` keeps the collective order: every rank takes part in every delivery.
        var assembled: WeightMatrix?
        var filled = 0
        for q in 1..<comm.size {
            for piece in pieces(q) {
                let frame = try comm.deliver([], from: 0, to: q)
                guard q == comm.rank, !frame.isEmpty else { continue }
                bytesMoved += frame.count
                let part = try Self.decode(frame, expectedRows: piece, expectedCols: cols)
                if assembled == nil {
                    let total = rows?.count ?? (shape.count == 2 ? shape[0] : part.rows)
                    assembled = try WeightMatrix(type: part.type, rows: total, cols: part.cols)
                }
                guard let m = assembled, m.type == part.type, m.cols == part.cols, filled + part.rows <= m.rows else {
                    throw RootStreamError.badFrame("piece of \(part.rows) rows does not fit the slice")
                }
                (m.storage.pointer + filled * m.rowBytes).copyMemory(from: part.storage.pointer, byteCount: part.rows * part.rowBytes)
                filled += part.rows
            }
        }
        let status = try comm.broadcast([], root: 0, idle: false)
        if !status.isEmpty { throw RootStreamError.root(String(decoding: status, as: UTF8.self)) }
        guard let m = assembled, filled == m.rows else {
            throw RootStreamError.badFrame("received \(filled) rows of \(assembled?.rows ?? -1)")
        }
        return m
    }

    func vector(_ t: LogicalTensor) throws -> [Float] {
        var message: [UInt8] = []
        if comm.rank == 0 {
            do {
                guard let local else { throw RootStreamError.badFrame("rank 0 has no file source") }
                let v = try local.vector(t)
                message = [1] + v.withUnsafeBytes { Array($0) }
            } catch { message = [0] + Array("\(error)".utf8) }
        }
        let received = try comm.broadcast(message, root: 0, idle: false)
        guard let status = received.first else { throw RootStreamError.badFrame("empty vector message") }
        let body = received.dropFirst()
        guard status == 1 else { throw RootStreamError.root(String(decoding: body, as: UTF8.self)) }
        guard body.count % 4 == 0 else { throw RootStreamError.badFrame("vector of \(body.count) bytes") }
        return body.withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)) }
    }

    /// Frame: type, rows, cols (UInt64 each, little-endian), then rows x rowBytes of storage.
    static func encode(_ m: WeightMatrix) -> [UInt8] {
        var out = [UInt8]()
        let payload = m.rows * m.rowBytes
        out.reserveCapacity(24 + payload)
        for v in [UInt64(m.type.rawValue), UInt64(m.rows), UInt64(m.cols)] {
            withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
        }
        out.append(contentsOf: UnsafeRawBufferPointer(start: m.storage.pointer, count: payload))
        return out
    }

    static func decode(_ frame: [UInt8], expectedRows: Range<Int>?, expectedCols: Range<Int>?) throws -> WeightMatrix {
        guard frame.count >= 24 else { throw RootStreamError.badFrame("\(frame.count) bytes, no header") }
        func field(_ i: Int) -> UInt64 {
            frame.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
        }
        guard let raw = UInt32(exactly: field(0)), let type = WeightType(rawValue: raw) else {
            throw RootStreamError.badFrame("unknown weight type \(field(0))")
        }
        guard let rows = Int(exactly: field(1)), let cols = Int(exactly: field(2)), rows < Int(Int32.max), cols < Int(Int32.max) else {
            throw RootStreamError.badFrame("implausible shape")
        }
        if let r = expectedRows, r.count != rows { throw RootStreamError.badFrame("\(rows) rows, asked for \(r.count)") }
        if let c = expectedCols, c.count != cols { throw RootStreamError.badFrame("\(cols) columns, asked for \(c.count)") }
        let m = try WeightMatrix(type: type, rows: rows, cols: cols)
        let payload = rows * m.rowBytes
        guard frame.count == 24 + payload else { throw RootStreamError.badFrame("\(frame.count - 24) payload bytes, expected \(payload)") }
        frame.withUnsafeBytes { raw in
            if payload > 0, let base = raw.baseAddress { m.storage.pointer.copyMemory(from: base + 24, byteCount: payload) }
        }
        return m
    }
}
