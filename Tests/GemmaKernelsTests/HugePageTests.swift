// Weight storage asks for transparent huge pages (AlignedBuffer, docs/KERNELS.md): checked on
// the mapping itself, whose VmFlags in /proc/self/smaps carry `hg` once MADV_HUGEPAGE is set.
// Whether the kernel then grants huge pages depends on its THP mode and free memory, so the
// test checks the advice, not the page size.
import Foundation
import Testing
@testable import GemmaKernels

@Suite struct HugePageTests {
    /// The VmFlags of the /proc/self/smaps mapping that contains `address`, nil if not found.
    static func vmFlags(containing address: UnsafeRawPointer) -> [String]? {
        // Read to end of file: /proc files report size 0, which a whole-file read may trust.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps") else { return nil }
        defer { try? handle.close() }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        let a = UInt(bitPattern: address)
        var inside = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && a >= bounds[0] && a < bounds[1]
            } else if inside, fields.first == "VmFlags:" {
                return fields.dropFirst().map(String.init)
            }
        }
        return nil
    }

    @Test func largeWeightsAreAdvisedSmallOnesAndScratchAreNot() throws {
        #if os(Linux)
        // 4096 rows x 1024 columns of Q8_0: 4.25 MiB, over the 4 MiB threshold. Advised unless
        // GEMMA_NODE_HUGEPAGES=0 is in this process's environment.
        let big = try WeightMatrix(type: .q8_0, rows: 4096, cols: 1024)
        let bigFlags = try #require(Self.vmFlags(containing: big.storage.pointer))
        #expect(bigFlags.contains("hg") == AlignedBuffer.hugePagesWanted, "flags \(bigFlags)")
        // 1 MiB of weights: its own mapping, below the threshold.
        let small = try WeightMatrix(type: .q8_0, rows: 1024, cols: 1024 - 64)
        #expect(small.storage.byteCount < AlignedBuffer.hugePageThreshold)
        let smallFlags = try #require(Self.vmFlags(containing: small.storage.pointer))
        #expect(!smallFlags.contains("hg"), "flags \(smallFlags)")
        // Scratch of the same size as the big weights: never advised.
        let scratch = AlignedBuffer(byteCount: big.storage.byteCount)
        let scratchFlags = try #require(Self.vmFlags(containing: scratch.pointer))
        #expect(!scratchFlags.contains("hg"), "flags \(scratchFlags)")
        #endif
    }

    /// Weight buffers from 64 KiB are their own mappings (so loading slices of that size never
    /// fragment the allocator's heap); scratch of the same size, and smaller weights, are not.
    @Test func weightSlicesFrom64KiBAreMapped() throws {
        // 160 rows of a 2816-wide Q4_K expert: 253,440 bytes, an expert's gate slice at 4 ranks.
        let slice = try WeightMatrix(type: .q4_K, rows: 160, cols: 2816)
        #expect(slice.storage.byteCount == 253_440)
        #expect(slice.storage.mapped)
        let atThreshold = AlignedBuffer(byteCount: AlignedBuffer.weightMapThreshold, hugePages: true)
        #expect(atThreshold.mapped)
        let below = AlignedBuffer(byteCount: AlignedBuffer.weightMapThreshold - 64, hugePages: true)
        #expect(!below.mapped)
        let scratch = AlignedBuffer(byteCount: 253_440)
        #expect(!scratch.mapped)
        #expect(Int(bitPattern: slice.storage.pointer) % 64 == 0)
    }

    /// WeightArena.pack moves the small weight buffers, each once and in the order given, into
    /// one 2 MiB-aligned mapping advised for huge pages, 64-byte aligned side by side with
    /// their bytes unchanged; large weights (their own huge pages) and scratch stay put; the
    /// mapping lives until the last buffer in it goes.
    @Test func packMovesSmallWeightsIntoOneHugePageArena() throws {
        #if os(Linux)
        guard WeightArena.packingWanted else { return }  // GEMMA_NODE_HUGEPAGES=0 or GEMMA_NODE_PACK_WEIGHTS=0: off by design
        func filled(_ m: WeightMatrix, _ seed: UInt8) -> WeightMatrix {
            for i in 0..<m.byteCount { m.storage.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)), toByteOffset: i, as: UInt8.self) }
            return m
        }
        func bytes(_ b: AlignedBuffer) -> [UInt8] { Array(UnsafeRawBufferPointer(start: b.pointer, count: b.byteCount)) }
        // 253,440 B (own mapping), 1,088 B (from the allocator), 680 B x 3 rows (not a multiple
        // of 64), and a 4.25 MiB matrix that keeps its own mapping.
        let a = filled(try WeightMatrix(type: .q4_K, rows: 160, cols: 2816), 1)
        let b = filled(try WeightMatrix(type: .q8_0, rows: 1, cols: 1024), 2)
        let c = filled(try WeightMatrix(type: .q8_0, rows: 3, cols: 640), 3)
        let big = filled(try WeightMatrix(type: .q8_0, rows: 4096, cols: 1024), 4)
        let scratch = AlignedBuffer(byteCount: 100_000)
        let before = [a, b, c, big].map { bytes($0.storage) }
        let bigPointer = big.storage.pointer, scratchPointer = scratch.pointer
        weak var weakArena: WeightArena?
        do {
            let arena = try #require(WeightArena.pack([a.storage, b.storage, a.storage, c.storage, big.storage, scratch]))
            weakArena = arena
            #expect(Int(bitPattern: arena.base) % (2 << 20) == 0)
            #expect(arena.byteCount == 253_440 + 1_088 + 2_048)  // c: 2,040 bytes rounded up to 64
            #expect(a.storage.pointer == arena.base)
            #expect(b.storage.pointer == arena.base + 253_440)
            #expect(c.storage.pointer == arena.base + 253_440 + 1_088)
            for m in [a, b, c] { #expect(m.storage.arena === arena && !m.storage.mapped) }
            #expect(big.storage.pointer == bigPointer && big.storage.arena == nil)
            #expect(scratch.pointer == scratchPointer && scratch.arena == nil)
            #expect([a, b, c, big].map { bytes($0.storage) } == before)
            let flags = try #require(Self.vmFlags(containing: arena.base))
            #expect(flags.contains("hg"), "flags \(flags)")
            // Packed buffers are not packed again.
            #expect(WeightArena.pack([a.storage, b.storage]) == nil)
        }
        #expect(weakArena != nil)  // a, b and c still hold it
        _ = [a, b, c].map { $0.rows }
        #endif
    }

    /// The arena is unmapped when the last buffer in it goes.
    @Test func arenaGoesWithItsLastBuffer() throws {
        #if os(Linux)
        guard WeightArena.packingWanted else { return }
        weak var weakArena: WeightArena?
        do {
            let m = try WeightMatrix(type: .q8_0, rows: 64, cols: 1024)
            weakArena = WeightArena.pack([m.storage])
            #expect(weakArena != nil)
            #expect(m.storage.arena != nil)
        }
        #expect(weakArena == nil)
        #endif
    }
}
