// `gemma-node synth`: writes a GGUF model of a preset's true dimensions with random weights
// (llama.cpp's tensor names, metadata and Q4_K_M mix; the default model's tokenizer), for
// memory and speed measurements of models too large to download here. One process, no MPI.
// The format work is in GemmaModel/SyntheticModel.swift and GemmaFormats/GGUFWriter.swift.
import ArgumentParser
import Foundation
import GemmaFormats
import GemmaKernels
import GemmaModel

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a GGUF model with random weights at a preset's real dimensions.",
        discussion: "Presets: \(ModelPresets.names.joined(separator: ", ")). See docs/LARGE_MODELS.md.")

    @Option(name: .customLong("config"), help: "Preset name (\(ModelPresets.names.joined(separator: ", "))).")
    var preset: String

    @Option(name: .customLong("quant"), help: "Weight encoding: q4_k (llama.cpp's Q4_K_M mix), q8_0 or bf16.")
    var quant: String = "q4_k"

    @Option(name: .customLong("router"), help: ArgumentHelp(
        "MoE presets: spread (random router rows, tokens spread over the experts as in a real model) or decisive (per layer, top-k planted experts every token picks by a margin of several logits, so rounding cannot change the choice: for comparing implementations, e.g. Scripts/crosscheck_llamacpp.py).",
        valueName: "spread|decisive"))
    var router: String = "spread"

    @Option(name: .customLong("seed"), help: "Random seed: the same seed writes the same bytes.")
    var seed: UInt64 = 0

    @Option(name: [.short, .customLong("output")], help: "The GGUF file to write.")
    var output: String?

    @Flag(name: .customLong("dry-run"), help: "Print the tensor list and the file size; write nothing.")
    var dryRun = false

    @Option(name: .customLong("layers"), help: "Keep only the first N layers (quick runs and tests).")
    var layers: Int?

    @Option(name: .customLong("vocab"), help: ArgumentHelp("Cut the vocabulary (and the tokenizer) to the first N tokens; tests only.", visibility: .hidden))
    var vocab: Int?

    @Option(name: .customLong("tokenizer"), help: "GGUF file whose tokenizer is copied in. Default: the default model ($GEMMA_NODE_MODEL, else the cached Gemma 3 270M).")
    var tokenizer: String?

    func validate() throws {
        if SynthQuant(rawValue: quant.lowercased()) == nil { throw ValidationError("--quant must be q4_k, q8_0 or bf16, got \(quant)") }
        if !dryRun && output == nil { throw ValidationError("give the file to write with -o (or --dry-run)") }
        if let layers, layers < 1 { throw ValidationError("--layers must be at least 1, got \(layers)") }
        if SynthRouting(rawValue: router.lowercased()) == nil { throw ValidationError("--router must be spread or decisive, got \(router)") }
    }

    func run() throws {
        let q = SynthQuant(rawValue: quant.lowercased()) ?? .q4_k
        let model: SyntheticModel
        let routing = SynthRouting(rawValue: router.lowercased()) ?? .spread
        do { model = try SyntheticModel(preset: preset, quant: q, layers: layers, vocab: vocab, routing: routing) } catch { throw SynthCommandError(message: "\(error)") }
        let tokPath = tokenizer ?? DefaultModel.path().path
        let tokFile: GGUFFile
        do { tokFile = try GGUFFile(path: tokPath) } catch {
            throw SynthCommandError(message: "cannot read the tokenizer source \(tokPath): \(error)")
        }
        let layout: (header: [UInt8], tensorOffsets: [Int], fileSize: Int)
        do { layout = try model.writer(tokenizer: tokFile).layout() } catch { throw SynthCommandError(message: "\(error)") }

        if dryRun {
            printPlan(model, fileSize: layout.fileSize, headerBytes: layout.header.count)
            return
        }
        guard let output else { return }
        try checkWritable(output, bytes: layout.fileSize)
        let progress = Progress(total: model.dataBytes)
        let start = Date()
        do {
            try model.write(to: output, tokenizer: tokFile, seed: seed) { done, total in progress.update(done, total) }
        } catch {
            throw SynthCommandError(message: "writing \(output) failed: \(error)")
        }
        progress.finish()
        let seconds = Date().timeIntervalSince(start)
        FileHandle.standardError.write(Data(("wrote \(output): \(layout.fileSize) bytes"
            + String(format: " (%.2f GB) in %.1f s, %.0f MB/s\n", Double(layout.fileSize) / 1e9, seconds,
                     Double(layout.fileSize) / 1e6 / max(seconds, 1e-9))).utf8))
    }

    func printPlan(_ m: SyntheticModel, fileSize: Int, headerBytes: Int) {
        for t in m.tensors {
            print("\(t.name)\t\(t.type)\t\(t.dims)\t\(t.byteCount)")
        }
        var byType: [String: (count: Int, bytes: Int)] = [:]
        for t in m.tensors { byType[t.type.description, default: (0, 0)].count += 1; byType[t.type.description, default: (0, 0)].bytes += t.byteCount }
        let mix = byType.sorted { $0.value.bytes > $1.value.bytes }
            .map { "\($0.key) \($0.value.count) tensors" + String(format: " %.2f GB", Double($0.value.bytes) / 1e9) }
        print("types: " + mix.joined(separator: ", "))
        print("\(m.presetName) \(m.quant.rawValue): \(m.config.numHiddenLayers) layers, vocab \(m.config.vocabSize), \(m.tensors.count) tensors, "
              + "header \(headerBytes) bytes, file \(fileSize) bytes"
              + String(format: " (%.2f GB, %.2f GiB)", Double(fileSize) / 1e9, Double(fileSize) / Double(1 << 30)))
    }

    /// The folder must exist and be writable, and its file system must have room.
    func checkWritable(_ path: String, bytes: Int) throws {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw SynthCommandError(message: "cannot write \(path): folder \(dir) does not exist")
        }
        guard FileManager.default.isWritableFile(atPath: dir) else {
            throw SynthCommandError(message: "cannot write \(path): folder \(dir) is not writable")
        }
        var isDirTarget: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirTarget), isDirTarget.boolValue {
            throw SynthCommandError(message: "cannot write \(path): it is a folder")
        }
        if let free = (try? FileManager.default.attributesOfFileSystem(forPath: dir))?[.systemFreeSize] as? NSNumber {
            let existing = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
            if free.int64Value + existing < Int64(bytes) {
                throw SynthCommandError(message: String(format: "cannot write %@: it needs %.2f GB, the file system has %.2f GB free",
                                                        path, Double(bytes) / 1e9, Double(free.int64Value + existing) / 1e9))
            }
        }
    }
}

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line every 5 s otherwise.
final class Progress {
    let total: Int
    let tty = isatty(STDERR_FILENO) != 0
    let start = Date()
    var last = Date.distantPast
    var drawn = false

    /// Names the work on the plain (non-terminal) lines.
    let label: String

    init(total: Int, label: String = "synth") {
        self.total = total
        self.label = label
    }

    func update(_ done: Int, _ total: Int) {
        let now = Date()
        guard now.timeIntervalSince(last) >= (tty ? 0.2 : 5) else { return }
        last = now
        let frac = total > 0 ? Double(done) / Double(total) : 1
        let rate = Double(done) / 1e6 / max(now.timeIntervalSince(start), 1e-9)
        if tty {
            let width = 30, filled = Int(frac * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
            FileHandle.standardError.write(Data(String(format: "\r[%@] %3.0f%% %.2f/%.2f GB %.0f MB/s", bar, frac * 100,
                                                       Double(done) / 1e9, Double(total) / 1e9, rate).utf8))
            drawn = true
        } else {
            FileHandle.standardError.write(Data(String(format: "%@: %.0f%% %.2f/%.2f GB %.0f MB/s\n", label, frac * 100,
                                                       Double(done) / 1e9, Double(total) / 1e9, rate).utf8))
        }
    }

    func finish() {
        if tty && drawn { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

struct SynthCommandError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
