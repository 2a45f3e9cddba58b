// Collectives of the in-process communicator at 1, 2 and 4 ranks: the results every rank
// sees, determinism across ranks, and failure propagation (agree, aborted groups).
import Foundation
import Testing
@testable import GemmaParallel

private struct Boom: Error, CustomStringConvertible {
    let rank: Int
    var description: String { "boom on rank \(rank)" }
}

@Suite struct LocalCommunicatorTests {
    @Test(arguments: [1, 2, 4])
    func rankAndSize(ranks: Int) throws {
        let seen = try LocalCommunicator.run(ranks: ranks) { comm in [comm.rank, comm.size] }
        #expect(seen == (0..<ranks).map { [$0, ranks] })
    }

    @Test(arguments: [1, 2, 4])
    func allReduceSumAddsEveryRank(ranks: Int) throws {
        let results = try LocalCommunicator.run(ranks: ranks) { comm -> [Float] in
            // Rank r contributes (i+1)*(r+1) at index i: the sum is (i+1) * n(n+1)/2.
            var values = (0..<1000).map { Float($0 + 1) * Float(comm.rank + 1) }
            try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            return values
        }
        let factor = Float(ranks * (ranks + 1) / 2)
        let expected = (0..<1000).map { Float($0 + 1) * factor }
        for r in 0..<ranks { #expect(results[r] == expected) }  // small integers: exact in Float
    }

    @Test(arguments: [2, 4])
    func allReduceSumIsBitIdenticalOnEveryRank(ranks: Int) throws {
        // Magnitudes differ by 10^3 between ranks, so the sum depends on the order of
        // addition; every rank must still receive the same bits.
        let results = try LocalCommunicator.run(ranks: ranks) { comm -> [UInt32] in
            var values = (0..<257).map { i in
                Float(sin(Double(i * 7 + comm.rank * 13))) * Float(pow(10.0, Double(comm.rank % 3) * 3))
            }
            try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            return values.map(\.bitPattern)
        }
        for r in 1..<ranks { #expect(results[r] == results[0]) }
    }

    @Test(arguments: [1, 2, 4])
    func allReduceMaxTakesLargest(ranks: Int) throws {
        let results = try LocalCommunicator.run(ranks: ranks) { comm -> [Float] in
            var values: [Float] = [Float(comm.rank), -Float(comm.rank), comm.rank == ranks - 1 ? 7 : -7]
            try values.withUnsafeMutableBufferPointer { try comm.allReduceMax($0) }
            return values
        }
        for r in 0..<ranks { #expect(results[r] == [Float(ranks - 1), 0, 7]) }
    }

    @Test(arguments: [1, 2, 4])
    func broadcastFromEveryRoot(ranks: Int) throws {
        let results = try LocalCommunicator.run(ranks: ranks) { comm -> [[UInt8]] in
            try (0..<ranks).map { root in
                // Non-roots pass bytes that must be ignored; lengths differ by root.
                let mine: [UInt8] = comm.rank == root
                    ? Array(repeating: UInt8(root + 1), count: root * 100 + 3) : [9, 9]
                return try comm.broadcast(mine, root: root, idle: root % 2 == 0)
            }
        }
        for r in 0..<ranks {
            for root in 0..<ranks {
                #expect(results[r][root] == Array(repeating: UInt8(root + 1), count: root * 100 + 3))
            }
        }
    }

    @Test func broadcastEmptyMessage() throws {
        let results = try LocalCommunicator.run(ranks: 3) { comm in try comm.broadcast([], root: 1, idle: false) }
        #expect(results == [[], [], []])
    }

    @Test(arguments: [1, 2, 4])
    func allGatherPlacesRecordsInRankOrder(ranks: Int) throws {
        let results = try LocalCommunicator.run(ranks: ranks) { comm in
            try comm.allGather([Float(comm.rank), Float(comm.rank * 10), 0.5])
        }
        let expected: [Float] = (0..<ranks).flatMap { r -> [Float] in [Float(r), Float(r * 10), 0.5] }
        for r in 0..<ranks { #expect(results[r] == expected) }
    }

    @Test(arguments: [1, 2, 4])
    func barrierWaitsForEveryRank(ranks: Int) throws {
        // Each rank bumps a shared counter before the barrier; after it, all must see `ranks`.
        let counter = Counter()
        let seen = try LocalCommunicator.run(ranks: ranks) { comm -> Int in
            if comm.rank == 0 { Thread.sleep(forTimeInterval: 0.05) }  // a late rank
            counter.increment()
            try comm.barrier()
            return counter.value
        }
        #expect(seen == Array(repeating: ranks, count: ranks))
    }

    @Test(arguments: [1, 2, 4])
    func agreeSucceedsWhenNoRankFails(ranks: Int) throws {
        let values = try LocalCommunicator.run(ranks: ranks) { comm in try comm.agreeOn { comm.rank * 2 } }
        #expect(values == (0..<ranks).map { $0 * 2 })
    }

    @Test(arguments: [1, 2, 4])
    func agreeGivesSameErrorOnEveryRank(ranks: Int) throws {
        let failing = ranks - 1
        let messages = try LocalCommunicator.run(ranks: ranks) { comm -> String in
            do {
                try comm.agree(comm.rank == failing ? Boom(rank: comm.rank) : nil)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(messages == Array(repeating: "rank \(failing): boom on rank \(failing)", count: ranks))
    }

    /// An error every rank already holds as `.remote` (another rank's fault, like the
    /// --sync-type check's) goes through a later agreement unchanged: the rank it names and its
    /// text, not a second "rank R:" prefix from the rank that passed it on.
    @Test(arguments: [2, 4])
    func agreedRemoteErrorKeepsItsOrigin(ranks: Int) throws {
        let messages = try LocalCommunicator.run(ranks: ranks) { comm -> String in
            do {
                try comm.agree(CommunicatorError.remote(rank: ranks - 1, message: "a fault of the last rank"))
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(messages == Array(repeating: "rank \(ranks - 1): a fault of the last rank", count: ranks))
    }

    @Test func agreeReportsLowestFailingRank() throws {
        let messages = try LocalCommunicator.run(ranks: 4) { comm -> String in
            do {
                try comm.agree(comm.rank >= 1 ? Boom(rank: comm.rank) : nil)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(messages == Array(repeating: "rank 1: boom on rank 1", count: 4))
    }

    @Test func mismatchedLengthsThrowOnEveryRank() throws {
        let errors = try LocalCommunicator.run(ranks: 2) { comm -> CommunicatorError? in
            var values = [Float](repeating: 1, count: comm.rank == 0 ? 4 : 5)
            do {
                try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
                return nil
            } catch let error as CommunicatorError {
                return error
            }
        }
        #expect(errors == Array(repeating: .mismatchedLength(operation: "allReduceSum", expected: 4, got: 5), count: 2))
    }

    @Test func failingRankReleasesRanksBlockedInCollectives() {
        // Rank 1 throws before the barrier; ranks 0, 2, 3 would wait forever without the
        // abort, and run() must rethrow rank 1's own error, not an `aborted` one.
        var message = "no error"
        do {
            _ = try LocalCommunicator.run(ranks: 4) { comm in
                if comm.rank == 1 { throw Boom(rank: 1) }
                try comm.barrier()
                try comm.barrier()
            }
        } catch {
            message = "\(error)"
        }
        #expect(message == "boom on rank 1")
    }

    @Test func zeroRanksIsAnError() {
        #expect(throws: CommunicatorError.self) { _ = try LocalCommunicator.run(ranks: 0) { _ in 0 } }
    }
}

private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
