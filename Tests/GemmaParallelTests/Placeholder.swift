import Testing
@Test func placeholder_GemmaParallelTests() { #expect(true) }
