// SentencePiece's `tokenizer.model` (a protobuf ModelProto) read and written with protobuf-c
// (generated code in CWire, from Scripts/proto/sentencepiece_model.proto). Only BPE models are
// accepted: that is what Gemma ships, and a unigram model would need a different algorithm.
import CWire
import Foundation

extension GemmaTokenizer {
    /// Loads a SentencePiece BPE `tokenizer.model`. User-defined pieces have "▁" respelled as
    /// a space (they are matched on the raw text before whitespace escaping, as in llama.cpp's
    /// GGUF conversion); BOS is added, EOS is not (SentencePiece / Gemma defaults).
    public convenience init(sentencePieceModel path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError.unreadable(file: path, reason: "cannot read the file")
        }
        try self.init(sentencePieceModelData: data, source: path)
    }

    /// Parses tokenizer.model bytes; `source` names them in errors.
    public convenience init(sentencePieceModelData data: Data, source: String) throws {
        guard !data.isEmpty else { throw TokenizerError.unreadable(file: source, reason: "the file is empty") }
        let parsed: UnsafeMutablePointer<Sentencepiece__ModelProto>? = data.withUnsafeBytes { raw in
            guard let base = raw.bindMemory(to: UInt8.self).baseAddress else { return nil }
            return sentencepiece__model_proto__unpack(nil, raw.count, base)
        }
        guard let proto = parsed else {
            throw TokenizerError.unreadable(file: source, reason: "not a valid SentencePiece model (protobuf parse failed)")
        }
        defer { sentencepiece__model_proto__free_unpacked(proto, nil) }
        let m = proto.pointee
        var modelType = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM
        var unk: Int32 = 0, bos: Int32 = 1, eos: Int32 = 2
        if let t = m.trainer_spec?.pointee {
            if t.has_model_type != 0 { modelType = t.model_type }
            if t.has_unk_id != 0 { unk = t.unk_id }
            if t.has_bos_id != 0 { bos = t.bos_id }
            if t.has_eos_id != 0 { eos = t.eos_id }
        }
        guard modelType == SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE else {
            throw TokenizerError.invalidVocabulary(source: source, reason: "SentencePiece model type \(modelType.rawValue) is not BPE (2); only BPE models are supported")
        }
        var addPrefix = true
        if let n = m.normalizer_spec?.pointee, n.has_add_dummy_prefix != 0 { addPrefix = n.add_dummy_prefix != 0 }
        let n = Int(m.n_pieces)
        guard n > 0, let list = m.pieces else {
            throw TokenizerError.invalidVocabulary(source: source, reason: "the model has no pieces")
        }
        var pieces: [String] = [], scores: [Float] = [], types: [TokenType] = []
        pieces.reserveCapacity(n); scores.reserveCapacity(n); types.reserveCapacity(n)
        for i in 0..<n {
            guard let p = list[i]?.pointee else {
                throw TokenizerError.invalidVocabulary(source: source, reason: "piece \(i) is missing")
            }
            var text = p.piece.map { String(cString: $0) } ?? ""
            let raw = p.has_type != 0 ? Int32(p.type.rawValue) : 1
            guard let type = TokenType(rawValue: raw) else {
                throw TokenizerError.invalidVocabulary(source: source, reason: "piece \(i) has unknown type \(raw)")
            }
            if type == .userDefined { text = text.replacingOccurrences(of: "\u{2581}", with: " ") }
            pieces.append(text)
            scores.append(p.has_score != 0 ? p.score : 0)
            types.append(type)
        }
        func valid(_ id: Int32) -> Int32? { id >= 0 && Int(id) < n ? id : nil }
        try self.init(pieces: pieces, scores: scores, types: types, mergeRule: .scores,
                      bosID: valid(bos), eosID: valid(eos), unknownID: valid(unk),
                      addBOS: true, addEOS: false, addSpacePrefix: addPrefix, source: source)
    }

    /// This vocabulary as SentencePiece BPE `tokenizer.model` bytes (user-defined pieces with
    /// spaces respelled "▁"), e.g. to hand a GGUF's vocabulary to SentencePiece tools.
    public func sentencePieceModelData() -> Data {
        var trainer = Sentencepiece__TrainerSpec()
        sentencepiece__trainer_spec__init(&trainer)
        trainer.has_model_type = 1; trainer.model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE
        trainer.has_byte_fallback = 1; trainer.byte_fallback = 1
        trainer.has_unk_id = 1; trainer.unk_id = unknownID ?? -1
        trainer.has_bos_id = 1; trainer.bos_id = bosID ?? -1
        trainer.has_eos_id = 1; trainer.eos_id = eosID ?? -1
        var normalizer = Sentencepiece__NormalizerSpec()
        sentencepiece__normalizer_spec__init(&normalizer)
        normalizer.has_add_dummy_prefix = 1; normalizer.add_dummy_prefix = addSpacePrefix ? 1 : 0
        normalizer.has_remove_extra_whitespaces = 1; normalizer.remove_extra_whitespaces = 0

        // C strings and messages must outlive the pack call: keep them in arrays we own.
        let cstrings: [UnsafeMutablePointer<CChar>?] = pieces.enumerated().map { i, p in
            strdup(types[i] == .userDefined ? p.replacingOccurrences(of: " ", with: "\u{2581}") : p)
        }
        defer { for s in cstrings { free(s) } }
        var messages = [Sentencepiece__ModelProto__SentencePiece](repeating: Sentencepiece__ModelProto__SentencePiece(), count: pieces.count)
        for i in 0..<pieces.count {
            sentencepiece__model_proto__sentence_piece__init(&messages[i])
            messages[i].piece = cstrings[i]
            messages[i].has_score = 1; messages[i].score = scores[i]
            messages[i].has_type = 1
            messages[i].type = Sentencepiece__ModelProto__SentencePiece__Type(rawValue: UInt32(types[i].rawValue))
        }
        return messages.withUnsafeMutableBufferPointer { msgs -> Data in
            guard let msgBase = msgs.baseAddress else { return Data() }
            var pointers: [UnsafeMutablePointer<Sentencepiece__ModelProto__SentencePiece>?] = (0..<msgs.count).map { msgBase + $0 }
            return pointers.withUnsafeMutableBufferPointer { ptrs -> Data in
                var model = Sentencepiece__ModelProto()
                sentencepiece__model_proto__init(&model)
                model.n_pieces = ptrs.count
                model.pieces = ptrs.baseAddress
                return withUnsafeMutablePointer(to: &trainer) { tp in
                    withUnsafeMutablePointer(to: &normalizer) { np in
                        model.trainer_spec = tp
                        model.normalizer_spec = np
                        let size = sentencepiece__model_proto__get_packed_size(&model)
                        var out = Data(count: size)
                        out.withUnsafeMutableBytes { buf in
                            if let b = buf.bindMemory(to: UInt8.self).baseAddress { _ = sentencepiece__model_proto__pack(&model, b) }
                        }
                        return out
                    }
                }
            }
        }
    }
}
