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

@Suite struct RepeatedCodingTests {
    /// The coordinator encodes a plan every step and each worker decodes and validates it:
    /// 2,000 rounds of a 16-sequence plan give the same bytes and the same plan every time (no
    /// state carried between calls). Speed is not asserted here (the project measures speed
    /// with benchmarks, not tests); docs/WIRE.md quotes the cost measured by hand.
    @Test func encodeDecodeRepeatedly() throws {
        let plan = Samples.decodePlan(sequences: 16)
        let bytes = plan.encode()
        for _ in 0..<2_000 {
            #expect(plan.encode() == bytes)
            #expect(try StepPlan.decode(bytes) == plan)
        }
    }
}
