import Testing
@Test func placeholder_GemmaNodeTests() { #expect(true) }
