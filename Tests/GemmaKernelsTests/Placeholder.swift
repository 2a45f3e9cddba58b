import Testing
@Test func placeholder_GemmaKernelsTests() { #expect(true) }
