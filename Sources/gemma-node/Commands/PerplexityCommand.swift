// `gemma-node perplexity`: perplexity of a text file, and closeness to a saved distribution
// (KL divergence, top-1 agreement, top-10 logit difference), alone or under mpirun. The text
// is cut into chunks of -c tokens (BOS first), each evaluated from an empty cache, and every
// position but a chunk's last is scored (llama.cpp scores only the second half of each chunk,
// so the two tools' perplexities differ on the same text). Logits stay on their vocabulary
// shards (PerplexityScorer). Rank 0 reads the files and sends the tokens to the other ranks.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaModel
import GemmaParallel

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a text file, and KL divergence / top-1 agreement against a saved distribution (--save-logits, --kl-base)."
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var linkOptions: LinkOptions
    @OptionGroup var syncOptions: SyncOptions

    @Option(name: [.short, .customLong("file")], help: "Text file to evaluate (with --kl-base: optional, checked against the base's tokens).")
    var file: String?

    @Option(help: "Evaluate at most this many chunks of -c tokens.")
    var chunks: Int?

    @Option(name: .customLong("save-logits"), help: "Write this run's distributions (top-K log-probs and normaliser per position, 12 + 8K bytes per token) as a base for --kl-base.")
    var saveLogits: String?

    @Option(name: .customLong("save-top"), help: "K of --save-logits: log-probs kept per position.")
    var saveTop: Int = LogitsBase.defaultTopK

    @Option(name: .customLong("kl-base"), help: "Compare with a base file (--save-logits of any model run, or Scripts/gen_truth_logits.py): KL(base || this), top-1 agreement, top-10 logit difference. Tokens, -c and chunks come from the base.")
    var klBase: String?

    @Option(name: .customLong("per-token"), help: "Write one tab-separated line per scored position: chunk, position, next token, NLL, KL (or empty), top-1 agreement.")
    var perToken: String?

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        if file == nil && klBase == nil { throw ValidationError("give a text file with -f, or a base with --kl-base") }
        if saveLogits != nil && klBase != nil { throw ValidationError("give either --save-logits or --kl-base, not both") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1, got \(chunks)") }
        if saveTop < 1 || saveTop > 4096 { throw ValidationError("--save-top must be in 1...4096, got \(saveTop)") }
    }

    /// What rank 0 sends every rank: the text's ids (no BOS) and BOS, or a base file.
    private struct Input {
        var ids: [Int32] = []
        var bos: Int32 = -1
        var base: LogitsBase?

        func encoded() -> [UInt8] {
            var out: [UInt8] = []
            func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
            u32(UInt32(bitPattern: bos)); u32(UInt32(ids.count))
            for id in ids { u32(UInt32(bitPattern: id)) }
            if let base { out += base.encoded() }
            return out
        }

        init() {}

        init(bytes: [UInt8]) throws {
            func u32(_ at: Int) -> UInt32 {
                UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
            }
            bos = Int32(bitPattern: u32(0))
            let n = Int(u32(4))
            ids = (0..<n).map { Int32(bitPattern: u32(8 + 4 * $0)) }
            let rest = 8 + 4 * n
            if bytes.count > rest { base = try LogitsBase(bytes: Array(bytes[rest...])) }
        }
    }

    /// The chunks of `ctx` tokens of a text, BOS first when there is one.
    static func chunked(_ ids: [Int32], bos: Int32, ctx: Int, limit: Int?) -> [[Int32]] {
        let body = bos >= 0 ? ctx - 1 : ctx
        var n = ids.count / max(1, body)
        if let limit { n = min(n, limit) }
        return (0..<n).map { c in (bos >= 0 ? [bos] : []) + ids[(c * body)..<((c + 1) * body)] }
    }

    /// Rank 0: reads the text (and base); errors name the file.
    private func readInput() throws -> Input {
        var input = Input()
        if let klBase {
            guard let data = FileManager.default.contents(atPath: klBase) else {
                throw PerplexityError.unreadable(klBase)
            }
            input.base = try LogitsBase(bytes: [UInt8](data))
        }
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw PerplexityError.unreadable(file) }
            guard let text = String(data: data, encoding: .utf8) else { throw PerplexityError.notText(file) }
            guard let tokenizer = try ModelSession.tokenizer(modelOptions.resolvedModelPath) else {
                throw ModelSessionError.noTokenizer(modelOptions.resolvedModelPath)
            }
            input.ids = tokenizer.encode(text, addSpecial: false)
            input.bos = tokenizer.bosID ?? -1
            if let base = input.base {
                let mine = Self.chunked(input.ids, bos: input.bos, ctx: base.ctx, limit: base.chunks).flatMap { $0 }
                if mine != base.tokens { throw PerplexityError.tokensDiffer(file: file, base: klBase ?? "") }
            }
        }
        if let saveLogits, !FileManager.default.createFile(atPath: saveLogits, contents: nil) {
            throw PerplexityError.unwritable(saveLogits)
        }
        if let perToken, !FileManager.default.createFile(atPath: perToken, contents: nil) {
            throw PerplexityError.unwritable(perToken)
        }
        return input
    }

    func run() throws {
        try ClusterSession.run(link: try linkOptions.link(), sync: try syncOptions.payload()) { comm in
            let payload: [UInt8] = try comm.agreeOn { comm.isCoordinator ? try readInput().encoded() : [] }
            let input = try Input(bytes: comm.size > 1 ? try comm.broadcast(payload, root: 0, idle: false) : payload)
            var options = modelOptions.loadOptions()
            if let base = input.base { options.maxContext = base.ctx }
            let model = try ModelSession.load(path: modelOptions.resolvedModelPath, options: options, comm: comm)
            let vocab = model.sampleableVocab

            let ctx: Int
            let work: [[Int32]]
            if let base = input.base {
                ctx = base.ctx
                let n = min(base.chunks, chunks ?? base.chunks)
                work = (0..<n).map { Array(base.tokens[($0 * ctx)..<(($0 + 1) * ctx)]) }
            } else {
                ctx = model.maxContext
                work = Self.chunked(input.ids, bos: input.bos, ctx: ctx, limit: chunks)
            }
            try comm.agree({ () -> Error? in
                if let base = input.base, base.vocab != vocab { return PerplexityError.vocabDiffers(base: base.vocab, model: vocab) }
                if ctx < 2 { return PerplexityError.shortContext(ctx) }
                if work.isEmpty { return PerplexityError.shortText(tokens: input.ids.count, ctx: ctx) }
                if saveLogits != nil && vocab >= 1 << 24 { return PerplexityError.vocabTooLarge(vocab) }
                for chunk in work { if let error = validateTokens(chunk, model: model) { return error } }
                return nil
            }())

            var summary = PerplexitySummary()
            var saved: [BaseRecord] = []
            var lines = ""
            let keep = saveLogits != nil ? min(saveTop, vocab) : 0
            let started = Date()
            for (c, chunk) in work.enumerated() {
                defer { model.release(slot: 0) }
                var start = 0
                while start < ctx {
                    let end = min(ctx, start + max(1, model.maxBatchTokens))
                    let batch = (start..<end).map { BatchEntry(slot: 0, token: chunk[$0], position: $0, wantLogits: $0 < ctx - 1) }
                    var slice: LogitsSlice?
                    var failure: Error?
                    do { slice = try model.forward(batch) } catch { failure = error }
                    try comm.agree(failure)
                    guard let slice else { throw EngineError.badPlan("model returned no logits") }
                    let positions = Array(start..<min(end, ctx - 1))
                    let baseRows = input.base.map { b in positions.map { b.records[c * (ctx - 1) + $0] } }
                    let scored = try PerplexityScorer.score(
                        rows: (0..<slice.rows).map(slice.row), range: model.vocabRange, vocab: vocab,
                        targets: positions.map { chunk[$0 + 1] }, base: baseRows, keepTop: keep, comm: comm)
                    if comm.isCoordinator {
                        for (j, p) in scored.enumerated() {
                            summary.add(p, base: baseRows?[j])
                            if let top = p.top {
                                saved.append(BaseRecord(logZ: Float(p.logZ), targetLogProb: Float(-p.nll), logTailMass: Float(p.logTailMass ?? -.infinity),
                                                        ids: top.map(\.id), logProbs: top.map { Float($0.logProb) }))
                            }
                            if perToken != nil {
                                let kl = p.kl.map { String(format: "%.6e", $0) } ?? ""
                                let agree = p.top1Agrees.map { $0 ? "1" : "0" } ?? ""
                                lines += "\(c)\t\(positions[j])\t\(chunk[positions[j] + 1])\t\(String(format: "%.6f", p.nll))\t\(kl)\t\(agree)\n"
                            }
                        }
                    }
                    start = end
                }
            }
            let seconds = Date().timeIntervalSince(started)
            guard comm.isCoordinator else { return }
            if let saveLogits {
                let file = LogitsBase(vocab: vocab, topK: keep, ctx: ctx, chunks: work.count, tokens: work.flatMap { $0 }, records: saved)
                guard FileManager.default.createFile(atPath: saveLogits, contents: Data(file.encoded())) else {
                    throw PerplexityError.unwritable(saveLogits)
                }
            }
            if let perToken, !FileManager.default.createFile(atPath: perToken, contents: Data(lines.utf8)) {
                throw PerplexityError.unwritable(perToken)
            }
            report(summary, ctx: ctx, chunks: work.count, ranks: comm.size, seconds: seconds)
        }
    }

    private func report(_ s: PerplexitySummary, ctx: Int, chunks: Int, ranks: Int, seconds: Double) {
        let ppl = s.perplexity
        if json {
            let out = JSONText()
            out.object {
                out.key("positions"); out.int(s.count)
                out.key("chunks"); out.int(chunks)
                out.key("ctx"); out.int(ctx)
                out.key("ranks"); out.int(ranks)
                out.key("seconds"); out.double(seconds)
                out.key("perplexity"); out.double(ppl.value)
                out.key("perplexity_error"); out.double(ppl.error)
                if s.klCount > 0 {
                    out.key("base_perplexity"); out.double(s.basePerplexity ?? .nan)
                    out.key("kl_mean"); out.double(s.meanKL.value)
                    out.key("kl_error"); out.double(s.meanKL.error)
                    out.key("kl_max"); out.double(s.klMax)
                    out.key("top1_agreement"); out.double(s.top1Agreement)
                    out.key("top10_abs_logit_diff"); out.double(s.meanTop10AbsDiff)
                }
            }
            print(out.text)
            return
        }
        print("\(s.count) positions in \(chunks) chunk(s) of \(ctx) tokens, \(ranks) rank(s), \(String(format: "%.1f", seconds)) s")
        print(String(format: "perplexity: %.4f +/- %.4f", ppl.value, ppl.error))
        guard s.klCount > 0 else { return }
        print(String(format: "base perplexity: %.4f", s.basePerplexity ?? .nan))
        print(String(format: "KL(base || this): mean %.6g +/- %.2g, max %.6g", s.meanKL.value, s.meanKL.error, s.klMax))
        print(String(format: "top-1 agreement: %.2f%%", 100 * s.top1Agreement))
        print(String(format: "top-10 mean |logit difference|: %.6g", s.meanTop10AbsDiff))
    }
}

enum PerplexityError: Error, CustomStringConvertible, SameOnEveryRankError {
    case unreadable(String)
    case unwritable(String)
    case notText(String)
    case tokensDiffer(file: String, base: String)
    case vocabDiffers(base: Int, model: Int)
    case shortText(tokens: Int, ctx: Int)
    case shortContext(Int)
    case vocabTooLarge(Int)

    var description: String {
        switch self {
        case let .unreadable(path): return "cannot read \(path)"
        case let .unwritable(path): return "cannot write \(path)"
        case let .notText(path): return "\(path) is not UTF-8 text"
        case let .tokensDiffer(file, base): return "the tokens of \(file) differ from those in \(base) (another text or tokenizer); leave out -f to evaluate the base's tokens"
        case let .vocabDiffers(base, model): return "the base file covers a vocabulary of \(base) ids, this model \(model): they cannot be compared"
        case let .shortText(tokens, ctx): return "the text gives \(tokens) tokens, fewer than one chunk of -c \(ctx) needs; lower -c"
        case let .shortContext(ctx): return "-c \(ctx) is too small: a chunk needs at least 2 tokens"
        case let .vocabTooLarge(v): return "--save-logits stores ids below 2^24; this vocabulary has \(v)"
        }
    }
}
