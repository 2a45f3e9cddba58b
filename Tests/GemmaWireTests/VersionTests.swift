// Version and handshake rules: any message but Hello from another protocol version is
// rejected naming both versions; Hello decodes across versions so checkHello can name the rank.
import Testing
@testable import GemmaWire

@Suite struct VersionTests {
    @Test func newerPlanIsRejected() {
        let bytes = WireMessage.plan(Samples.mixedPlan).encode(envelopeVersion: WireProtocol.version + 1)
        #expect(throws: WireError.versionMismatch(remote: WireProtocol.version + 1, local: WireProtocol.version)) {
            try WireMessage.decode(bytes)
        }
        let text = WireError.versionMismatch(remote: 2, local: 1).description
        #expect(text.contains("protocol version 2") && text.contains("speaks 1") && text.contains("same commit"))
    }

    @Test func newerShutdownIsRejected() {
        let bytes = WireMessage.shutdown(Samples.shutdown).encode(envelopeVersion: 7)
        #expect(throws: WireError.versionMismatch(remote: 7, local: WireProtocol.version)) { try WireMessage.decode(bytes) }
    }

    @Test func planVersionInsideCurrentEnvelopeIsChecked() {
        var plan = Samples.mixedPlan
        plan.protocolVersion = WireProtocol.version + 1
        #expect(throws: WireError.versionMismatch(remote: WireProtocol.version + 1, local: WireProtocol.version)) {
            try StepPlan.decode(plan.encode())
        }
    }

    @Test func unknownBodyFromNewerBuildIsTyped() {
        // A current-version (4) envelope whose body is field 9 (a message this build does not know).
        let current: [UInt8] = [0x08, 0x04, 0x4a, 0x02, 0x08, 0x01]
        #expect(throws: WireError.unknownMessage(fieldNumbers: [9])) { try WireMessage.decode(current) }
        // The same from a version-5 sender: the version is the better explanation.
        let newer: [UInt8] = [0x08, 0x05, 0x4a, 0x02, 0x08, 0x01]
        #expect(throws: WireError.versionMismatch(remote: 5, local: WireProtocol.version)) { try WireMessage.decode(newer) }
    }

    @Test func missingVersionOrBodyIsGarbage() {
        // Body without version.
        let noVersion = Array(Samples.shutdown.encode().dropFirst(2))
        #expect(throws: WireError.self) { try WireMessage.decode(noVersion) }
        if case .garbage = classifyError(noVersion) {} else { Issue.record("expected garbage, got \(String(describing: classifyError(noVersion)))") }
        // Version without body.
        if case .garbage = classifyError([0x08, 0x04]) {} else { Issue.record("version-only envelope must be garbage") }
    }

    @Test func helloFromAnotherVersionDecodesAndIsRefusedByCheckHello() throws {
        let coordinator = Hello(modelFingerprint: "m1", rank: 0, worldSize: 4, host: "a")
        let remote = Hello(protocolVersion: 5, modelFingerprint: "m1", rank: 2, worldSize: 4, host: "b")
        let decoded = try Hello.decode(WireMessage.hello(remote).encode(envelopeVersion: 5))
        #expect(decoded == remote)
        #expect(throws: WireError.rankVersionMismatch(rank: 2, remote: 5, local: WireProtocol.version)) {
            try checkHello(local: coordinator, remote: decoded)
        }
        let text = WireError.rankVersionMismatch(rank: 2, remote: 2, local: 1).description
        #expect(text == "rank 2 speaks protocol version 2, coordinator speaks 1; rebuild all ranks from the same commit")
    }

    @Test func helloFingerprintAndWorld() throws {
        let coordinator = Hello(modelFingerprint: "gemma3-270m:abc", rank: 0, worldSize: 4, host: "a")
        try checkHello(local: coordinator, remote: Hello(modelFingerprint: "gemma3-270m:abc", rank: 3, worldSize: 4, host: "d"))
        let other = Hello(modelFingerprint: "gemma3-1b:def", rank: 1, worldSize: 4, host: "b")
        #expect(throws: WireError.fingerprintMismatch(rank: 1, remote: "gemma3-1b:def", local: "gemma3-270m:abc")) {
            try checkHello(local: coordinator, remote: other)
        }
        #expect(WireError.fingerprintMismatch(rank: 1, remote: "x", local: "y").description
                == "rank 1 loaded model \"x\", coordinator loaded \"y\"; start every rank with the same model file")
        let smaller = Hello(modelFingerprint: "gemma3-270m:abc", rank: 1, worldSize: 2, host: "b")
        #expect(throws: WireError.worldMismatch(rank: 1, detail: "it sees 2 ranks, coordinator sees 4")) {
            try checkHello(local: coordinator, remote: smaller)
        }
    }

    func classifyError(_ bytes: [UInt8]) -> WireError? {
        do { _ = try WireMessage.decode(bytes); return nil } catch { return error as? WireError }
    }
}
