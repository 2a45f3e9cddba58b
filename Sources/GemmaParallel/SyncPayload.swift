// Cheaper synchronisation: the model's sum all-reduces can carry their floats as bf16 or as
// 8-bit blocks (q8_0: 32 int8 values and one scale per block, like distributed-llama's
// Q80 sync) instead of f32. `SyncPayloadCommunicator` encodes each rank's buffer, gathers
// every rank's compact payload to every rank (`allGatherBytes`), then decodes and sums the
// payloads in rank order, so every rank ends with bit-identical sums (ranks stay in
// lockstep; greedy tokens are the same everywhere). Only `allReduceSum` is compressed: the
// model's activation merges (embedding, attention output, MLP output). `allReduceMax`
// (agreements), broadcasts (plans) and `allGather` (sampling) pass through unchanged.
// The encoders below are plain scalar Swift: they are the reference and the code that runs.

/// The element type of a sum all-reduce's payload on the wire (`--sync-type`).
public enum SyncPayload: String, CaseIterable, Sendable, CustomStringConvertible {
    /// 4 bytes per value: the transport's own all-reduce (MPI_Allreduce), exact.
    case f32
    /// 2 bytes per value: the top half of the f32, rounded to nearest even. Relative error at
    /// most 2^-8 for normal values.
    case bf16
    /// 36 bytes per 32 values (1.125 bytes per value): an f32 scale d = amax / 127 and 32
    /// int8 q in -127...127, value = q * d. Error at most half a step (d / 2) per block.
    /// The scale is f32, not ggml's f16: f16 would clip blocks beyond 127 * 65504 (about
    /// 8.3e6) and give blocks below about 8e-3 a subnormal, coarser scale; it costs 2 bytes
    /// per 32 values.
    case q8_0

    public var description: String { rawValue }

    /// Values per q8_0 block.
    public static let blockValues = 32
    /// Bytes per q8_0 block: the f32 scale, then 32 int8.
    public static let blockBytes = 4 + blockValues

    /// Parses `f32`, `bf16` or `q8_0` (case-insensitive; `q8` is accepted for q8_0).
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "f32": self = .f32
        case "bf16": self = .bf16
        case "q8_0", "q8": self = .q8_0
        default: return nil
        }
    }

    /// Bytes that `count` values take on the wire.
    public func encodedBytes(count: Int) -> Int {
        switch self {
        case .f32: return count * 4
        case .bf16: return count * 2
        case .q8_0: return (count + Self.blockValues - 1) / Self.blockValues * Self.blockBytes
        }
    }

    /// Encodes `values` into the first `encodedBytes(count: values.count)` bytes of `out`.
    public func encode(_ values: UnsafeBufferPointer<Float>, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= encodedBytes(count: values.count), "SyncPayload.encode: output too small")
        switch self {
        case .f32:
            for i in 0..<values.count { out.storeBytes(of: values[i].bitPattern, toByteOffset: 4 * i, as: UInt32.self) }
        case .bf16:
            for i in 0..<values.count { out.storeBytes(of: Self.bf16(values[i]), toByteOffset: 2 * i, as: UInt16.self) }
        case .q8_0:
            guard let src = values.baseAddress, let dst = out.baseAddress else { return }
            var start = 0, offset = 0
            while start < values.count {
                let n = min(Self.blockValues, values.count - start)
                Self.encodeBlock(src + start, count: n, into: dst + offset)
                start += n
                offset += Self.blockBytes
            }
        }
    }

    /// Decodes `count` values from `payload`; with `accumulate` adds them to `out` (out[i] +=
    /// value), else stores them. Summing payloads in the same order on every rank gives
    /// bit-identical results everywhere.
    public func decode(_ payload: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Float>, accumulate: Bool) {
        precondition(payload.count >= encodedBytes(count: out.count), "SyncPayload.decode: payload too small")
        let n = out.count
        switch self {
        case .f32:
            for i in 0..<n {
                let v = Float(bitPattern: payload.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                out[i] = accumulate ? out[i] + v : v
            }
        case .bf16:
            for i in 0..<n {
                let v = Float(bitPattern: UInt32(payload.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
                out[i] = accumulate ? out[i] + v : v
            }
        case .q8_0:
            guard let src = payload.baseAddress, let dst = out.baseAddress else { return }
            var start = 0, offset = 0
            while start < n {
                let count = min(Self.blockValues, n - start)
                let d = Float(bitPattern: src.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                let q = (src + offset + 4).assumingMemoryBound(to: Int8.self)
                let o = dst + start
                if accumulate {
                    for j in 0..<count { o[j] = o[j] + Float(q[j]) * d }
                } else {
                    for j in 0..<count { o[j] = Float(q[j]) * d }
                }
                start += count
                offset += Self.blockBytes
            }
        }
    }

    /// f32 to bf16, round to nearest even; NaN stays NaN (quiet), infinities stay infinite.
    @inline(__always) static func bf16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// One q8_0 block of up to 32 values (a short last block is padded with zeros): d =
    /// amax / 127, q = round(x / d) (x / d is within 127 * 2^-23 of at most 127, so nothing
    /// is clipped beyond rounding). A block holding NaN or an infinity gets a NaN scale, so
    /// the fault shows in the sum as it would with f32 instead of vanishing.
    ///
    /// Written for speed on the all-reduce path (pointer loops, no libm call): the rounding is
    /// `roundHalfAway`, equal to `rounded(.toNearestOrAwayFromZero)` for every value that can
    /// occur here (SyncPayloadTests checks the bytes against that definition).
    static func encodeBlock(_ values: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        var finite = true
        for j in 0..<count {
            let v = values[j]
            finite = finite && v.isFinite
            amax = max(amax, abs(v))
        }
        let scale: Float = finite ? amax / 127 : .nan
        out.storeBytes(of: scale.bitPattern, as: UInt32.self)
        let q = (out + 4).bindMemory(to: Int8.self, capacity: blockValues)
        if finite && scale > 0 {
            for j in 0..<count {
                q[j] = Int8(min(127, max(-127, roundHalfAway(values[j] / scale))))
            }
        } else {
            for j in 0..<count { q[j] = 0 }
        }
        for j in count..<blockValues { q[j] = 0 }
    }

    /// Round half away from zero for |x| < 2^31: the truncation through Int32 is exact there,
    /// and so is the fraction x - trunc(x), so comparing it with 0.5 decides exactly.
    @inline(__always) static func roundHalfAway(_ x: Float) -> Float {
        let t = Float(Int32(x))
        let f = x - t
        return f >= 0.5 ? t + 1 : (f <= -0.5 ? t - 1 : t)
    }
}

/// Sum all-reduces with a compact payload (see the file comment); every other collective is
/// forwarded unchanged. With `.f32` the sum is the inner transport's own all-reduce. In a
/// world of one nothing is sent and nothing is rounded.
///
/// The first sum all-reduce first checks that every rank uses the same payload (one
/// all-gather of the type): a rank started with another `--sync-type` would otherwise call
/// a different collective and hang the job. On a mismatch every rank throws the same
/// `CommunicatorError.remote`.
public final class SyncPayloadCommunicator: Communicator, @unchecked Sendable {
    // @unchecked: used from one thread per rank (the engine thread), like every communicator.
    public let inner: any Communicator
    public let payload: SyncPayload
    private var agreed = false
    private var sendBuffer: [UInt8] = []
    private var receiveBuffer: [UInt8] = []

    /// Values per exchange: longer buffers (prefill chunks) go in pieces of this many values,
    /// a multiple of 32, bounding the scratch memory at a few MiB per rank.
    public static let pieceValues = 1 << 18

    public init(_ inner: any Communicator, payload: SyncPayload) {
        self.inner = inner
        self.payload = payload
    }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }

    /// Bytes this rank sends for a sum all-reduce of `count` floats (for reports).
    public func payloadBytes(count: Int) -> Int { payload.encodedBytes(count: count) }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard size > 1, let base = buffer.baseAddress, buffer.count > 0 else { return try inner.allReduceSum(buffer) }
        if !agreed {
            try checkSameEverywhere()
            agreed = true
        }
        if payload == .f32 { return try inner.allReduceSum(buffer) }
        var offset = 0
        while offset < buffer.count {
            let n = min(Self.pieceValues, buffer.count - offset)
            try reduce(UnsafeMutableBufferPointer(start: base + offset, count: n))
            offset += n
        }
    }

    /// f32 payloads start the wrapped transport's sum (so `--overlap` overlaps); compact
    /// payloads are encoded, gathered and decoded at once (no overlap for them).
    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
        guard size > 1, buffer.count > 0, payload == .f32 else {
            try allReduceSum(buffer)
            return .done
        }
        if !agreed {
            try checkSameEverywhere()
            agreed = true
        }
        return try inner.startAllReduceSum(buffer)
    }

    /// Encode, gather every rank's payload, decode and add in rank order.
    private func reduce(_ values: UnsafeMutableBufferPointer<Float>) throws {
        let bytes = payload.encodedBytes(count: values.count)
        if sendBuffer.count < bytes { sendBuffer = [UInt8](repeating: 0, count: bytes) }
        if receiveBuffer.count < bytes * size { receiveBuffer = [UInt8](repeating: 0, count: bytes * size) }
        try sendBuffer.withUnsafeMutableBytes { send in
            payload.encode(UnsafeBufferPointer(values), into: send)
            try receiveBuffer.withUnsafeMutableBytes { receive in
                try inner.allGatherBytes(UnsafeRawBufferPointer(rebasing: send[0..<bytes]),
                                         into: UnsafeMutableRawBufferPointer(rebasing: receive[0..<(bytes * size)]))
                for r in 0..<size {
                    payload.decode(UnsafeRawBufferPointer(rebasing: receive[(r * bytes)..<((r + 1) * bytes)]),
                                   into: values, accumulate: r > 0)
                }
            }
        }
    }

    private func checkSameEverywhere() throws {
        let codes = try inner.allGather([Float(SyncPayload.allCases.firstIndex(of: payload) ?? 0)])
        if let r = codes.firstIndex(where: { $0 != codes[0] }) {
            let name = { (code: Float) in SyncPayload.allCases.indices.contains(Int(code)) ? SyncPayload.allCases[Int(code)].rawValue : "?" }
            throw CommunicatorError.remote(rank: r, message: "--sync-type is \(name(codes[r])) on rank \(r) but \(name(codes[0])) on rank 0; start every rank with the same --sync-type")
        }
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try inner.allReduceMax(buffer) }
    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        try inner.broadcast(bytes, root: root, idle: idle)
    }
    public func allGather(_ record: [Float]) throws -> [Float] { try inner.allGather(record) }
    public func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        try inner.allGatherBytes(record, into: result)
    }
    public func barrier() throws { try inner.barrier() }
    public func deliver(_ bytes: [UInt8], from: Int, to: Int) throws -> [UInt8] { try inner.deliver(bytes, from: from, to: to) }
}
