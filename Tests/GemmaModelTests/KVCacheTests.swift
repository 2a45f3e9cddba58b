// The KV cache reserves every position at load but only the positions written become resident
// memory; what is read back is what was stored, and unwritten positions read as zero.
import Foundation
import Testing
@testable import GemmaModel
import GemmaKernels
import GemmaTestSupport

/// Resident bytes of `count` bytes at `base` (mincore: pages present in memory).
private func residentBytes(_ base: UnsafeMutableRawPointer, count: Int) -> Int? {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    var flags = [UInt8](repeating: 0, count: (count + page - 1) / page)
    guard mincore(base, count, &flags) == 0 else { return nil }
    return flags.reduce(0) { $0 + Int($1 & 1) } * page
}

@Suite struct KVCacheTests {
    @Test func onlyWrittenPositionsAreResident() throws {
        // One global layer of 16384 positions x 2 KV heads x 256: 32 MiB each for K and V.
        let cache = KVCache(layers: [KVCache.LayerSpec(kvHeads: 2, headDim: 256, capacity: 16384)], slots: 1, type: .f32)
        let keys = cache.keys[0]
        #expect(residentBytes(keys.pointer, count: keys.byteCount) == 0)
        let k = [Float](repeating: 1.5, count: 512), v = [Float](repeating: -2, count: 512)
        for p in [0, 1, 9000] { cache.store(layer: 0, slot: 0, position: p, k: k, v: v) }
        // Positions 0 and 1 share a 4 KiB page (2 KiB per position); 9000 is on another.
        let rss = try #require(residentBytes(keys.pointer, count: keys.byteCount))
        #expect(rss >= 2 * 4096 && rss <= 2 * 2 * 1024 * 1024, "\(rss) bytes resident")   // 2 MiB: a transparent huge page
        #expect(cache.floats(cache.key(layer: 0, slot: 0, position: 9000, head: 1), layer: 0)[255] == 1.5)
        #expect(cache.floats(cache.value(layer: 0, slot: 0, position: 1, head: 0), layer: 0)[0] == -2)
        #expect(cache.floats(cache.key(layer: 0, slot: 0, position: 5000, head: 0), layer: 0)[0] == 0)   // never written
        #expect(cache.bytesPerToken == 2 * 2 * 256 * 4)
    }

    @Test func layersWithoutTheirOwnCacheAllocateNothing() {
        let cache = KVCache(layers: [KVCache.LayerSpec(kvHeads: 0, headDim: 256, capacity: 128)], slots: 2)
        #expect(cache.keys[0].byteCount == 0 && cache.values[0].byteCount == 0)
    }

    /// f16 and q8_0 caches really hold fewer bytes: the buffers are 1/2 and 34/128 of f32's,
    /// and writing the same positions makes that much memory resident (mincore), not more.
    @Test(arguments: [KVCacheType.f32, .f16, .q8_0])
    func storedTypeShrinksResidentMemory(_ type: KVCacheType) throws {
        // 16384 positions x 2 KV heads x 256: 32 MiB of f32 keys; write the first half.
        let cache = KVCache(layers: [KVCache.LayerSpec(kvHeads: 2, headDim: 256, capacity: 16384)], slots: 1, type: type)
        let f32Bytes = 16384 * 2 * 256 * 4
        let ratio: Double = type == .f32 ? 1 : type == .f16 ? 0.5 : 34.0 / 128
        #expect(Double(cache.keys[0].byteCount) == Double(f32Bytes) * ratio)
        #expect(cache.values[0].byteCount == cache.keys[0].byteCount)
        #expect(cache.bytesPerToken == 2 * 2 * type.bytes(values: 256))
        var rng = SplitMix64(seed: 3)
        let k: [Float] = (0..<512).map { _ in rng.normal() }, v: [Float] = (0..<512).map { _ in rng.normal() }
        for p in 0..<8192 { cache.store(layer: 0, slot: 0, position: p, k: k, v: v) }
        let keys = cache.keys[0]
        let rss = try #require(residentBytes(keys.pointer, count: keys.byteCount))
        let written = 8192 * 2 * type.bytes(values: 256)
        // At least the written rows; at most those plus two 2 MiB pages (transparent huge pages
        // around the edges).
        #expect(rss >= written && rss <= written + 2 * 2 * 1024 * 1024, "\(type): \(rss) bytes resident for \(written) written")
        // Written rows read back within the type's bound (KVRowRoundTripTests states them).
        let back = cache.floats(cache.key(layer: 0, slot: 0, position: 4321, head: 1), layer: 0)
        let worst = zip(back, k[256...]).map { abs($0 - $1) }.max() ?? .nan
        let amax = k[256...].map(abs).max() ?? 0
        let bound: Float = type == .f32 ? 0 : type == .f16 ? amax * 0x1p-11 : amax / 127 * (1 + 0x1p-11) * 0.50001
        #expect(worst <= bound, "\(type): error \(worst) > \(bound)")
    }

    /// A sliding layer's ring: position p and p + capacity share one row (the newer wins), in
    /// every type, and another slot's rows stay apart.
    @Test(arguments: [KVCacheType.f32, .f16, .q8_0])
    func ringRowsWrapInEveryType(_ type: KVCacheType) {
        let cache = KVCache(layers: [KVCache.LayerSpec(kvHeads: 1, headDim: 64, capacity: 8)], slots: 2, type: type)
        let a = [Float](repeating: 1, count: 64), b = [Float](repeating: -3, count: 64), c = [Float](repeating: 0.5, count: 64)
        cache.store(layer: 0, slot: 0, position: 2, k: a, v: a)
        cache.store(layer: 0, slot: 1, position: 2, k: c, v: c)
        cache.store(layer: 0, slot: 0, position: 10, k: b, v: b)
        // What a row of x reads back as in this type (q8_0 stores -3 as 127 steps of f16(3/127)).
        func stored(_ x: [Float]) -> [Float] {
            var row = [UInt8](repeating: 0, count: type.bytes(values: 64)), back = [Float](repeating: .nan, count: 64)
            row.withUnsafeMutableBytes { type.store(x, count: 64, into: $0.baseAddress!) }
            row.withUnsafeBytes { type.load($0.baseAddress!, count: 64, into: &back) }
            return back
        }
        #expect(stored(b) != stored(a) && stored(b) != stored(c))
        #expect(cache.floats(cache.key(layer: 0, slot: 0, position: 2, head: 0), layer: 0) == stored(b))
        #expect(cache.floats(cache.value(layer: 0, slot: 0, position: 18, head: 0), layer: 0) == stored(b))
        #expect(cache.floats(cache.key(layer: 0, slot: 1, position: 2, head: 0), layer: 0) == stored(c))
    }
}
