// The world of one: collectives leave data unchanged, agree rethrows the local error.
import Testing
@testable import GemmaParallel

@Suite struct SoloCommunicatorTests {
    @Test func collectivesAreIdentity() throws {
        let comm = SoloCommunicator()
        #expect(comm.rank == 0 && comm.size == 1 && comm.isCoordinator)
        var values: [Float] = [1, -2, 3.5]
        try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
        try values.withUnsafeMutableBufferPointer { try comm.allReduceMax($0) }
        #expect(values == [1, -2, 3.5])
        #expect(try comm.broadcast([1, 2, 3], root: 0, idle: true) == [1, 2, 3])
        #expect(try comm.allGather([4, 5]) == [4, 5])
        try comm.barrier()
    }

    @Test func broadcastFromAMissingRankFails() {
        #expect(throws: CommunicatorError.self) { _ = try SoloCommunicator().broadcast([], root: 1, idle: false) }
    }

    @Test func agreeReportsTheLocalError() {
        struct Local: Error, CustomStringConvertible { var description: String { "bad input" } }
        #expect(throws: CommunicatorError.remote(rank: 0, message: "bad input")) {
            try SoloCommunicator().agree(Local())
        }
        #expect(throws: Never.self) { try SoloCommunicator().agree(nil) }
    }
}
