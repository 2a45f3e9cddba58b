import Testing
@Test func placeholder_GemmaEngineTests() { #expect(true) }
