// The KV cache reserves every position at load but only the positions written become resident
// memory; what is read back is what was stored, and unwritten positions read as zero.
import Foundation
import Testing
@testable import GemmaModel

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
        let cache = KVCache(layers: [KVCache.LayerSpec(kvHeads: 2, headDim: 256, capacity: 16384)], slots: 1)
        let keys = cache.keys[0]
        #expect(residentBytes(keys.pointer, count: keys.byteCount) == 0)
        let k = [Float](repeating: 1.5, count: 512), v = [Float](repeating: -2, count: 512)
        for p in [0, 1, 9000] { cache.store(layer: 0, slot: 0, position: p, k: k, v: v) }
        // Positions 0 and 1 share a 4 KiB page (2 KiB per position); 9000 is on another.
        let rss = try #require(residentBytes(keys.pointer, count: keys.byteCount))
        #expect(rss >= 2 * 4096 && rss <= 2 * 2 * 1024 * 1024, "\(rss) bytes resident")   // 2 MiB: a transparent huge page
        #expect(cache.key(layer: 0, slot: 0, position: 9000, head: 1)[255] == 1.5)
        #expect(cache.value(layer: 0, slot: 0, position: 1, head: 0)[0] == -2)
        #expect(cache.key(layer: 0, slot: 0, position: 5000, head: 0)[0] == 0)   // never written
        #expect(cache.bytesPerToken == 2 * 2 * 256 * 4)
    }

    @Test func layersWithoutTheirOwnCacheAllocateNothing() {
        let cache = KVCache(layers: [KVCache.LayerSpec(kvHeads: 0, headDim: 256, capacity: 128)], slots: 2)
        #expect(cache.keys[0].byteCount == 0 && cache.values[0].byteCount == 0)
    }
}
