// Encoded sizes of typical plans (the figures quoted in docs/WIRE.md), bounded so a change that
// bloats the per-step broadcast is noticed. Bounds are the measured sizes plus ~25% headroom.
import Testing
@testable import GemmaWire

@Suite struct SizeTests {
    @Test func typicalPlanSizes() {
        let one = Samples.decodePlan(sequences: 1).encode().count
        let sixteen = Samples.decodePlan(sequences: 16).encode().count
        let sixtyFour = Samples.decodePlan(sequences: 64).encode().count
        let prefill = Samples.prefillPlan(tokens: 512).encode().count
        print("wire sizes: decode x1 = \(one) B, decode x16 = \(sixteen) B, decode x64 = \(sixtyFour) B, prefill 512 tokens = \(prefill) B")
        #expect(one <= 64)
        #expect(sixteen <= 16 * 48)
        #expect(sixtyFour <= 64 * 48)
        // Token ids up to 262,143 are 1-3 byte varints.
        #expect(prefill <= 512 * 3 + 64)
    }
}

@Suite struct SpeedTests {
    /// Per-step control-plane cost on the coordinator (encode) and a worker (decode + validate).
    /// Bound: 2 ms for a 16-sequence plan even in a debug build on a loaded 2-core box, far
    /// below a forward pass (tens of ms); measured figures go to docs/WIRE.md.
    @Test func encodeDecodeCost() throws {
        let plan = Samples.decodePlan(sequences: 16)
        let rounds = 2_000
        let clock = ContinuousClock()
        var bytes: [UInt8] = []
        let encode = clock.measure { for _ in 0..<rounds { bytes = plan.encode() } }
        var back = StepPlan(stepId: 0)
        let decode = try clock.measure { for _ in 0..<rounds { back = try StepPlan.decode(bytes) } }
        #expect(back == plan)
        func us(_ d: Duration) -> Double {
            (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(rounds)
        }
        print("wire speed (16-sequence plan): encode \(us(encode)) us, decode+validate \(us(decode)) us")
        #expect(us(encode) + us(decode) < 2_000)
    }
}
