import Testing
@Test func placeholder_GemmaTokenizerTests() { #expect(true) }
