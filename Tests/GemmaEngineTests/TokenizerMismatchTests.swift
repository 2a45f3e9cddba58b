// A tokenizer from another model (`serve --tokenizer`, or a directory's tokenizer.json next to
// another model's weights): refused at start-up, naming both sizes, instead of failing request
// by request on ids past the model's vocabulary.
import Foundation
import Testing
import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTestSupport

@Suite struct TokenizerMismatchTests {
    @Test func largerTokenizerThanVocabularyIsRefused() throws {
        // The tiny Gemma 3 fixture has a small vocabulary; the default model's tokenizer 262,144 ids.
        let model = try GemmaShard.load(path: TestPaths.fixture("hf/gemma3_pattern"), comm: SoloCommunicator(),
                                        options: GemmaLoadOptions(maxContext: 32))
        let foreign = try TestPaths.requireDefaultModel()
        do {
            _ = try ModelSession.tokenizer(foreign, for: model)
            Issue.record("a 262,144-token tokenizer was accepted for a \(model.vocabSize)-token model")
        } catch let e as ModelSessionError {
            #expect(e == .tokenizerMismatch(path: foreign, tokens: 262_144, vocabulary: model.vocabSize))
            #expect(e.description.contains("belongs to another model"))
        }
        // The default model with its own tokenizer passes the same check.
        let own = try GemmaShard.load(path: URL(fileURLWithPath: foreign), comm: SoloCommunicator(), options: GemmaLoadOptions(maxContext: 32))
        #expect(try ModelSession.tokenizer(foreign, for: own)?.count == 262_144)
    }
}
