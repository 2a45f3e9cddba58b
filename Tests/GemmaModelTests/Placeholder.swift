import Testing
@Test func placeholder_GemmaModelTests() { #expect(true) }
