import Testing
@Test func placeholder_GemmaFormatsTests() { #expect(true) }
