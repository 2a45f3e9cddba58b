// `startAllReduceSum` through the decorators the commands stack (SyncPayloadCommunicator over
// EmulatedLinkCommunicator over the transport): an f32 payload must reach the transport's
// own started sum (otherwise `--overlap on` silently overlaps nothing), compact payloads sum
// at once, and every path leaves the right sum in the buffer after `wait()`.
import Foundation
import Testing
@testable import GemmaParallel

/// Passes everything to a LocalCommunicator, but a started sum runs only at `wait()` (as a
/// transport that moves nothing before the wait would), and records which entry was used.
final class DeferringCommunicator: Communicator, @unchecked Sendable {
    let inner: LocalCommunicator
    private(set) var events: [String] = []
    init(_ inner: LocalCommunicator) { self.inner = inner }
    var rank: Int { inner.rank }
    var size: Int { inner.size }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        events.append("sum")
        try inner.allReduceSum(buffer)
    }
    func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
        events.append("start")
        return PendingCollective { [self] in
            events.append("wait")
            try inner.allReduceSum(buffer)
        }
    }
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try inner.allReduceMax(buffer) }
    func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] { try inner.broadcast(bytes, root: root, idle: idle) }
    func allGather(_ record: [Float]) throws -> [Float] { try inner.allGather(record) }
    func allGatherBytes(_ record: UnsafeRawBufferPointer, into result: UnsafeMutableRawBufferPointer) throws {
        try inner.allGatherBytes(record, into: result)
    }
    func barrier() throws { try inner.barrier() }
}

@Suite struct StartedSumTests {
    /// Two started sums outstanding at once, waited in start order, through the stack.
    static func run(_ payload: SyncPayload, ranks: Int, link: EmulatedLink) throws -> [([Float], [Float], [String], Double)] {
        try LocalCommunicator.run(ranks: ranks) { local -> ([Float], [Float], [String], Double) in
            let transport = DeferringCommunicator(local)
            let linked = EmulatedLinkCommunicator(transport, link: link)
            let comm = SyncPayloadCommunicator(linked, payload: payload)
            var a = (0..<256).map { Float($0 % 7) * Float(comm.rank + 1) }
            var b = (0..<256).map { Float($0 % 5) + Float(comm.rank) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let first = try a.withUnsafeMutableBufferPointer { try comm.startAllReduceSum($0) }
            let second = try b.withUnsafeMutableBufferPointer { try comm.startAllReduceSum($0) }
            try first.wait()
            try second.wait()
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            return (a, b, transport.events, elapsed)
        }
    }

    @Test(arguments: [2, 4])
    func f32StartsTheTransportsSum(ranks: Int) throws {
        let link = EmulatedLink(latency: 2e-3, bytesPerSecond: 125e6)
        let modelled = link.allReduceSeconds(bytes: 256 * 4, ranks: ranks)
        let rankSum = Float(ranks * (ranks + 1) / 2), rankIndexSum = Float(ranks * (ranks - 1) / 2)
        let expectedA: [Float] = (0..<256).map { Float($0 % 7) * rankSum }
        let expectedB: [Float] = (0..<256).map { Float($0 % 5) * Float(ranks) + rankIndexSum }
        for (a, b, events, elapsed) in try Self.run(.f32, ranks: ranks, link: link) {
            #expect(a == expectedA)
            #expect(b == expectedB)
            #expect(events == ["start", "start", "wait", "wait"], "the started sum did not reach the transport: \(events)")
            // Lower bound only (a test checks results, not speed): each wait returns no sooner
            // than the modelled time after its start.
            #expect(elapsed >= modelled)
        }
    }

    @Test func compactPayloadsSumAtOnce() throws {
        let link = EmulatedLink(latency: 1e-4, bytesPerSecond: 125e6)
        for (a, b, events, _) in try Self.run(.bf16, ranks: 2, link: link) {
            // bf16 rounds each rank's values; these small integers are exact in bf16.
            let expectedA: [Float] = (0..<256).map { Float($0 % 7) * 3 }
            let expectedB: [Float] = (0..<256).map { Float($0 % 5) * 2 + 1 }
            #expect(a == expectedA)
            #expect(b == expectedB)
            #expect(!events.contains("start"), "\(events)")
        }
    }
}
