// The emulated link: its parser, the modelled time of each collective, and that the
// decorator passes results through unchanged and holds each collective at least that long.
import Foundation
import Testing
@testable import GemmaParallel

@Suite struct EmulatedLinkTests {
    @Test func parsesLatencyAndGigabits() throws {
        let link = try EmulatedLink(parsing: "200,1")
        #expect(link.latency == 200e-6)
        #expect(link.bytesPerSecond == 125e6)
        for bad in ["", "200", "200,", ",1", "a,1", "200,0", "-1,1", "200,-2", "1,2,3", "nan,1", "200,inf"] {
            #expect(throws: EmulatedLinkError.self, "\(bad)") { try EmulatedLink(parsing: bad) }
        }
    }

    @Test func modelledTimes() {
        let link = EmulatedLink(latency: 200e-6, bytesPerSecond: 125e6)  // 0.2 ms, 1 Gbit/s
        #expect(EmulatedLink.rounds(1) == 0 && EmulatedLink.rounds(2) == 1 && EmulatedLink.rounds(3) == 2
                && EmulatedLink.rounds(4) == 2 && EmulatedLink.rounds(5) == 3 && EmulatedLink.rounds(8) == 3)
        #expect(link.allReduceSeconds(bytes: 2560, ranks: 1) == 0)
        // 2 ranks, 640 floats: one exchange of the whole vector (doubling beats the ring's 2 steps).
        #expect(abs(link.allReduceSeconds(bytes: 2560, ranks: 2) - (200e-6 + 2560 / 125e6)) < 1e-12)
        // 4 ranks, 4 MiB: the ring (6 steps of a quarter) beats doubling (2 rounds of the whole).
        let big = 4 << 20
        let ring = 6 * (200e-6 + Double(big) / 4 / 125e6)
        #expect(abs(link.allReduceSeconds(bytes: big, ranks: 4) - ring) < 1e-12)
        #expect(link.allReduceSeconds(bytes: big, ranks: 4) < 2 * (200e-6 + Double(big) / 125e6))
        #expect(abs(link.broadcastSeconds(bytes: 600, ranks: 4) - 2 * (200e-6 + 600 / 125e6)) < 1e-12)
        #expect(abs(link.allGatherSeconds(bytes: 512, ranks: 4) - 3 * (200e-6 + 512 / 125e6)) < 1e-12)
        #expect(abs(link.barrierSeconds(ranks: 4) - 400e-6) < 1e-12)
    }

    /// Both hold modes (spinning, and yielding the core on every turn as on a host with no
    /// spare core) pass results through unchanged and hold no less than the modelled time.
    @Test(arguments: [1, 2, 4], [false, true])
    func resultsPassThroughAndEachCollectiveIsHeld(ranks: Int, yields: Bool) throws {
        let link = EmulatedLink(latency: 2e-3, bytesPerSecond: 125e6)
        let results = try LocalCommunicator.run(ranks: ranks) { local -> ([Float], [Float], [UInt8], Double, Double) in
            let comm = EmulatedLinkCommunicator(local, link: link, yieldsWhileHolding: yields)
            var values = (0..<640).map { Float($0) * Float(comm.rank + 1) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let gathered = try comm.allGather([Float(comm.rank)])
            let plan = try comm.broadcast(comm.rank == 0 ? [1, 2, 3] : [], root: 0, idle: false)
            try comm.barrier()
            return (values, gathered, plan, elapsed, comm.heldSeconds)
        }
        let factor = Float(ranks * (ranks + 1) / 2)
        let modelled = link.allReduceSeconds(bytes: 640 * 4, ranks: ranks)
        let total = modelled + link.allGatherSeconds(bytes: 4, ranks: ranks) + link.broadcastSeconds(bytes: 3, ranks: ranks)
            + link.barrierSeconds(ranks: ranks)
        for (values, gathered, plan, elapsed, held) in results {
            #expect(values == (0..<640).map { Float($0) * factor })
            #expect(gathered == (0..<ranks).map(Float.init))
            #expect(plan == [1, 2, 3])
            #expect(elapsed >= modelled, "held \(elapsed) s, modelled \(modelled) s")
            #expect(abs(held - total) < 1e-12)
        }
    }
}
