import Testing
@Test func placeholder_GemmaWireTests() { #expect(true) }
