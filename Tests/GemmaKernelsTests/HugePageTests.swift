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
}
