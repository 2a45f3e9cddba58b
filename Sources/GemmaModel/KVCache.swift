// Per-rank KV cache: only this rank's KV heads, one region per slot (sequence) and layer,
// stored as f32, f16 or q8_0 rows (`--kv-type`, KVCacheType; attention reads them directly).
// Global layers keep every position; sliding layers keep a ring buffer of window +
// maxBatchTokens positions, so a prefill chunk never overwrites a key a query of the same
// chunk still needs. Reserved once at load as `AlignedBuffer`s, which map buffers of 256 KiB
// and more lazily: a page becomes resident memory only when a position on it is first written
// (a 4096-token context costs what the run uses).
import Foundation
import GemmaKernels

final class KVCache: @unchecked Sendable {
    // @unchecked: written only by the rank's thread between parallel sections; read concurrently.
    struct LayerSpec {
        var kvHeads: Int
        var headDim: Int
        /// Positions held per slot (ring buffer size).
        var capacity: Int
    }

    let specs: [LayerSpec]
    let slots: Int
    /// How K and V are stored (`--kv-type`): f32, f16 or q8_0 rows of one head's headDim values.
    let type: KVCacheType
    /// Bytes of one head's row per layer: type.bytes(values: headDim).
    let rowBytes: [Int]
    /// keys[layer]: [slots, capacity, kvHeads] rows of rowBytes[layer] bytes; values the same.
    let keys: [AlignedBuffer]
    let values: [AlignedBuffer]
    /// Tokens cached per slot (next position); 0 once the slot is released.
    var lengths: [Int]
    /// Prefix caching: positions 0 ..< held[slot] were written by the slot's current content,
    /// which stays readable after `release` (a retained sequence) until the slot restarts.
    var held: [Int]
    /// Prefix caching: below this position a wrapping (sliding) layer's entries of the slot may
    /// be stale even where its own ring has not wrapped yet (they came from another slot that
    /// had overwritten them). 0 for a sequence computed from position 0.
    var floors: [Int]
    let maxCapacity: Int

    /// Ring size of a layer: every position for global layers; for sliding ones the window
    /// plus one batch: writing positions p0 ..< p0 + n (n <= maxBatchTokens) overwrites
    /// p0 + n - 1 - C at most, older than the oldest key p0 - window + 1 still needed when
    /// C >= window + n - 1.
    static func capacity(window: Int?, maxContext: Int, maxBatchTokens: Int) -> Int {
        guard let window else { return maxContext }
        return min(maxContext, window + maxBatchTokens)
    }

    /// The loader refuses a type that cannot hold a layer's head dim before building the cache
    /// (`GemmaShard.checkKVType`), so the precondition only guards direct callers.
    init(layers: [LayerSpec], slots: Int, type: KVCacheType = .f16) {
        precondition(layers.allSatisfy { $0.kvHeads == 0 || type.holds(headDim: $0.headDim) }, "\(type) cache with a head dim it cannot hold")
        specs = layers
        self.slots = slots
        self.type = type
        rowBytes = layers.map { type.bytes(values: $0.headDim) }
        keys = layers.map { AlignedBuffer(byteCount: slots * $0.capacity * $0.kvHeads * type.bytes(values: $0.headDim)) }
        values = layers.map { AlignedBuffer(byteCount: slots * $0.capacity * $0.kvHeads * type.bytes(values: $0.headDim)) }
        lengths = Array(repeating: 0, count: slots)
        held = Array(repeating: 0, count: slots)
        floors = Array(repeating: 0, count: slots)
        maxCapacity = layers.map(\.capacity).max() ?? 1
    }

    /// Bytes of K and V per cached token per slot on this rank (all layers).
    var bytesPerToken: Int { zip(specs, rowBytes).reduce(0) { $0 + 2 * $1.0.kvHeads * $1.1 } }

    /// Byte offset of a head's row.
    @inline(__always)
    func offset(layer: Int, slot: Int, position: Int, head: Int) -> Int {
        let s = specs[layer]
        return ((slot * s.capacity + position % s.capacity) * s.kvHeads + head) * rowBytes[layer]
    }

    /// Converts one token's K and V ([kvHeads, headDim] floats each) into the cache's type.
    func store(layer: Int, slot: Int, position: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>) {
        let s = specs[layer]
        for head in 0..<s.kvHeads {
            let o = offset(layer: layer, slot: slot, position: position, head: head)
            type.store(k + head * s.headDim, count: s.headDim, into: keys[layer].pointer + o)
            type.store(v + head * s.headDim, count: s.headDim, into: values[layer].pointer + o)
        }
    }

    /// A head's row of keys (stored type) at a position.
    @inline(__always)
    func key(layer: Int, slot: Int, position: Int, head: Int) -> UnsafeRawPointer {
        UnsafeRawPointer(keys[layer].pointer + offset(layer: layer, slot: slot, position: position, head: head))
    }

    @inline(__always)
    func value(layer: Int, slot: Int, position: Int, head: Int) -> UnsafeRawPointer {
        UnsafeRawPointer(values[layer].pointer + offset(layer: layer, slot: slot, position: position, head: head))
    }

    /// Copies the K and V rows of positions `from ..< to` of one layer from slot `source` to
    /// slot `slot` (the same ring indices: both rings hold position p at p % capacity).
    func copyRows(layer: Int, from source: Int, to slot: Int, positions: Range<Int>) {
        let s = specs[layer]
        guard s.kvHeads > 0, source != slot else { return }
        let bytes = s.kvHeads * rowBytes[layer]
        for p in positions {
            let a = offset(layer: layer, slot: source, position: p, head: 0)
            let b = offset(layer: layer, slot: slot, position: p, head: 0)
            (keys[layer].pointer + b).copyMemory(from: keys[layer].pointer + a, byteCount: bytes)
            (values[layer].pointer + b).copyMemory(from: values[layer].pointer + a, byteCount: bytes)
        }
    }

    /// A cached row read back as floats (tests and diagnostics).
    func floats(_ row: UnsafeRawPointer, layer: Int) -> [Float] {
        let d = specs[layer].headDim
        return [Float](unsafeUninitializedCapacity: d) { buffer, count in
            type.load(row, count: d, into: buffer.baseAddress!)
            count = d
        }
    }
}
