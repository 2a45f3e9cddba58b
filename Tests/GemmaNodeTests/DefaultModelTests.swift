// Default model path resolution: the cache under $HOME unless GEMMA_NODE_MODEL overrides it.
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
