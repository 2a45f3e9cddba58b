// Default model path resolution (the cache under $HOME unless GEMMA_NODE_MODEL overrides it)
// and the host facts a rank reports (CPU list parsing).
import Foundation
import Testing
@testable import gemma_node

@Suite struct DefaultModelTests {
    @Test func defaultsToTheCacheUnderHome() {
        let path = DefaultModel.path(environment: ["HOME": "/home/someone"])
        #expect(path.path == "/home/someone/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf")
    }

    @Test func environmentOverrides() {
        let path = DefaultModel.path(environment: ["HOME": "/home/someone", "GEMMA_NODE_MODEL": "/models/x.gguf"])
        #expect(path.path == "/models/x.gguf")
    }

    @Test func emptyOverrideIsIgnored() {
        let path = DefaultModel.path(environment: ["HOME": "/h", "GEMMA_NODE_MODEL": ""])
        #expect(path.path == "/h/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf")
    }
}

@Suite struct HostInfoTests {
    @Test func parsesLinuxCPULists() {
        #expect(HostInfo.cpuListCount("0") == 1)
        #expect(HostInfo.cpuListCount("0-3") == 4)
        #expect(HostInfo.cpuListCount("0-3,6,8-9\n") == 7)
        #expect(HostInfo.cpuListCount("") == nil)
        #expect(HostInfo.cpuListCount("3-1") == nil)
        #expect(HostInfo.cpuListCount("a-b") == nil)
    }

    @Test func availableCoresIsPositive() {
        #expect(HostInfo.availableCores >= 1)
    }

    /// Threads per rank by default: the host's cores shared among its ranks, unless the
    /// launcher already bound the rank to fewer cores than the host has.
    @Test func defaultThreadsShareTheHostAmongItsRanks() {
        #expect(HostInfo.defaultThreads(cores: 2, onlineCores: 2, localRanks: 1) == 2)
        #expect(HostInfo.defaultThreads(cores: 2, onlineCores: 2, localRanks: 2) == 1)
        #expect(HostInfo.defaultThreads(cores: 8, onlineCores: 8, localRanks: 3) == 2)
        #expect(HostInfo.defaultThreads(cores: 2, onlineCores: 2, localRanks: 4) == 1)
        #expect(HostInfo.defaultThreads(cores: 1, onlineCores: 2, localRanks: 2) == 1)  // bound to one core
        #expect(HostInfo.defaultThreads(cores: 4, onlineCores: 16, localRanks: 4) == 4)  // bound to four cores
        #expect(HostInfo.defaultThreads(cores: 0, onlineCores: 2, localRanks: 2) == 1)
    }
}
