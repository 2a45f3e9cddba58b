// Per-rank KV cache: only this rank's KV heads, one region per slot (sequence) and layer.
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
    /// keys[layer]: [slots, capacity, kvHeads, headDim]; values the same.
    let keys: [AlignedBuffer]
    let values: [AlignedBuffer]
    /// Tokens cached per slot (next position).
    var lengths: [Int]
    let maxCapacity: Int

    /// Ring size of a layer: every position for global layers; for sliding ones the window
    /// plus one batch: writing positions p0 ..< p0 + n (n <= maxBatchTokens) overwrites
    /// p0 + n - 1 - C at most, older than the oldest key p0 - window + 1 still needed when
    /// C >= window + n - 1.
    static func capacity(window: Int?, maxContext: Int, maxBatchTokens: Int) -> Int {
        guard let window else { return maxContext }
        return min(maxContext, window + maxBatchTokens)
    }

    init(layers: [LayerSpec], slots: Int) {
        specs = layers
        self.slots = slots
        keys = layers.map { AlignedBuffer(byteCount: slots * $0.capacity * $0.kvHeads * $0.headDim * 4) }
        values = layers.map { AlignedBuffer(byteCount: slots * $0.capacity * $0.kvHeads * $0.headDim * 4) }
        lengths = Array(repeating: 0, count: slots)
        maxCapacity = layers.map(\.capacity).max() ?? 1
    }

    /// Bytes of K and V per cached token per slot on this rank (all layers).
    var bytesPerToken: Int { specs.reduce(0) { $0 + 2 * $1.kvHeads * $1.headDim * 4 } }

    @inline(__always)
    func offset(layer: Int, slot: Int, position: Int, head: Int) -> Int {
        let s = specs[layer]
        return ((slot * s.capacity + position % s.capacity) * s.kvHeads + head) * s.headDim
    }

    /// Copies one token's K and V ([kvHeads, headDim] each) into the cache.
    func store(layer: Int, slot: Int, position: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>) {
        let s = specs[layer]
        let o = offset(layer: layer, slot: slot, position: position, head: 0)
        (keys[layer].floats().baseAddress! + o).update(from: k, count: s.kvHeads * s.headDim)
        (values[layer].floats().baseAddress! + o).update(from: v, count: s.kvHeads * s.headDim)
    }

    @inline(__always)
    func key(layer: Int, slot: Int, position: Int, head: Int) -> UnsafePointer<Float> {
        UnsafePointer(keys[layer].floats().baseAddress! + offset(layer: layer, slot: slot, position: position, head: head))
    }

    @inline(__always)
    func value(layer: Int, slot: Int, position: Int, head: Int) -> UnsafePointer<Float> {
        UnsafePointer(values[layer].floats().baseAddress! + offset(layer: layer, slot: slot, position: position, head: head))
    }
}
