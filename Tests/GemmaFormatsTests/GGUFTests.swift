// GGUF reader tests: fixtures written by the `gguf` Python package (Scripts/gen_gguf_fixtures.py,
// expectations read back with gguf's own reader), every truncation point and seeded corruption
// of a small file, block-aligned slicing, and the real default-model file.
import Foundation
import Testing
import GemmaFormats
import GemmaKernels
import GemmaTestSupport

let ggufFixtures = TestPaths.fixture("gguf")

func fixtureBytes(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: ggufFixtures.appendingPathComponent(name)))
}

func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return String(format: "%016llx", h)
}

struct ExpectedTensor: Decodable { let dims: [Int]; let type: UInt32; let offset: Int; let fnv1a64: String }
struct ExpectedTypes: Decodable { let tensor_count: Int; let kv_count: Int; let tensors: [String: ExpectedTensor]; let keys: [String] }
struct ExpectedAligned: Decodable { let dims: [Int]; let abs_offset: Int }
struct ExpectedFile: Decodable {
    let types_v3: ExpectedTypes
    let align64_v3: [String: [String: ExpectedAligned]]
}

func expected() throws -> ExpectedFile {
    try JSONDecoder().decode(ExpectedFile.self, from: Data(contentsOf: ggufFixtures.appendingPathComponent("expected.json")))
}

@Suite struct GGUFFixtureTests {
    func checkTypesFile(_ name: String, version: UInt32) throws {
        let g = try GGUFFile(path: ggufFixtures.appendingPathComponent(name).path)
        let exp = try expected().types_v3
        #expect(g.version == version)
        // gguf's reader lists three pseudo-fields (GGUF.version, .tensor_count, .kv_count) first.
        #expect(g.metadataKeys == exp.keys.filter { !$0.hasPrefix("GGUF.") })
        #expect(g.tensors.count == exp.tensor_count)
        #expect(g.alignment == 32 && g.dataStart % 32 == 0)

        #expect(g.value("t.u8") == .uint8(200))
        #expect(g.value("t.i8") == .int8(-100))
        #expect(g.value("t.u16") == .uint16(60000))
        #expect(g.value("t.i16") == .int16(-30000))
        #expect(g.value("t.u32") == .uint32(4_000_000_000))
        #expect(g.value("t.i32") == .int32(-2_000_000_000))
        #expect(g.value("t.f32") == .float32(1.5))
        #expect(g.value("t.bool_true") == .bool(true))
        #expect(g.value("t.bool_false") == .bool(false))
        #expect(try g.string("t.string") == "héllo ▁ wörld 🙂")
        #expect(try g.string("t.empty_string") == "")
        #expect(g.value("t.u64") == .uint64(18_000_000_000_000_000_000))
        #expect(g.value("t.i64") == .int64(-9_000_000_000_000_000_000))
        #expect(g.value("t.f64") == .float64(-2.25))
        #expect(try g.intArray("t.arr_i32") == [1, -2, 3])
        #expect(try g.floatArray("t.arr_f32") == [0.5, -1.25])
        #expect(try g.stringArray("t.arr_str") == ["a", "", "▁▁", "<0x0A>"])
        #expect(try g.boolArray("t.arr_bool") == [true, false, true])
        #expect(try g.intArray("t.arr_u8") == [7, 255])
        #expect(g.value("t.arr_u64") == .array(elementType: .uint64, values: [.uint64(1), .uint64(1 << 63)]))
        #expect(g.value("t.arr_nested") == .array(elementType: .array, values: [
            .array(elementType: .int32, values: [.int32(1), .int32(2)]),
            .array(elementType: .int32, values: [.int32(3)]),
            .array(elementType: .int32, values: [.int32(4), .int32(5), .int32(6)]),
        ]))
        #expect(try g.string("general.architecture") == "testarch")
        #expect(try g.int("testarch.block_count") == 2)

        for (tname, e) in exp.tensors {
            let t = try g.tensor(tname)
            #expect(t.dims == e.dims, "\(tname)")
            #expect(t.typeID == e.type, "\(tname)")
            #expect(t.offset == e.offset, "\(tname)")
            if t.type != nil {
                #expect(fnv1a64(try g.data(of: t)) == e.fnv1a64, "\(tname) data")
            }
        }
        let f32 = try g.data(of: g.tensor("f32"))
        #expect(Array(f32.bindMemory(to: Float.self)) == (0..<12).map(Float.init))
    }

    @Test func readsEveryValueTypeV3() throws { try checkTypesFile("types_v3.gguf", version: 3) }
    @Test func readsVersion2() throws { try checkTypesFile("types_v2.gguf", version: 2) }

    @Test func customAlignment() throws {
        let g = try GGUFFile(path: ggufFixtures.appendingPathComponent("align64_v3.gguf").path)
        let exp = try expected().align64_v3["tensors"] ?? [:]
        #expect(g.alignment == 64)
        #expect(g.dataStart % 64 == 0)
        for (name, e) in exp {
            let t = try g.tensor(name)
            #expect(t.dims == e.dims)
            #expect(g.dataStart + t.offset == e.abs_offset, "\(name) absolute offset")
        }
        let b = try g.data(of: g.tensor("b"))
        #expect(Array(b.bindMemory(to: Float.self)) == [0, -1, -2, -3, -4, -5])
    }

    @Test func typedAccessorErrors() throws {
        let g = try GGUFFile(path: ggufFixtures.appendingPathComponent("types_v3.gguf").path)
        #expect(try g.int("t.u8") == 200)
        #expect(try g.int("t.i64") == -9_000_000_000_000_000_000)
        #expect(try g.float("t.u32") == 4_000_000_000)
        #expect(throws: GGUFError.missingKey(file: g.path, key: "nope")) { try g.string("nope") }
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.string", expected: "integer", found: "string")) { try g.int("t.string") }
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.arr_f32", expected: "array of string", found: "array of f32")) { try g.stringArray("t.arr_f32") }
        // u64 beyond Int.max is not silently wrapped.
        #expect(throws: GGUFError.self) { try g.int("t.u64") }
        #expect(throws: GGUFError.missingTensor(file: g.path, tensor: "absent")) { try g.tensor("absent") }
        // Arrays stay in the file until asked for; the errors are those of decoded arrays.
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.arr_str", expected: "array of integers", found: "array of string")) { try g.intArray("t.arr_str") }
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.arr_str", expected: "array of numbers", found: "array of string")) { try g.floatArray("t.arr_str") }
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.arr_i32", expected: "array of bool", found: "array of i32")) { try g.boolArray("t.arr_i32") }
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.arr_i32", expected: "integer", found: "array of i32")) { try g.int("t.arr_i32") }
        #expect(throws: GGUFError.wrongType(file: g.path, key: "t.string", expected: "array", found: "string")) { try g.stringArray("t.string") }
        #expect(throws: GGUFError.missingKey(file: g.path, key: "nope")) { try g.intArray("nope") }
        // u64 elements beyond Int.max are refused as in a scalar.
        #expect(throws: GGUFError.self) { try g.intArray("t.arr_u64") }
        #expect(try g.floatArray("t.arr_i32") == [1, -2, 3])
        // `metadata` holds the same values as `value(_:)`, arrays included.
        let all = g.metadata
        #expect(all.count == g.metadataKeys.count)
        for key in g.metadataKeys { #expect(all[key] == g.value(key)) }
    }

    @Test func firstIndexOfStringWithoutDecoding() throws {
        let g = try GGUFFile(path: ggufFixtures.appendingPathComponent("types_v3.gguf").path)
        #expect(g.firstIndex(of: "▁▁", inStringArray: "t.arr_str") == 2)
        #expect(g.firstIndex(of: "", inStringArray: "t.arr_str") == 1)
        #expect(g.firstIndex(of: "<0x0A>", inStringArray: "t.arr_str") == 3)
        #expect(g.firstIndex(of: "▁", inStringArray: "t.arr_str") == nil)   // a prefix is not a match
        #expect(g.firstIndex(of: "a", inStringArray: "t.arr_i32") == nil)  // not strings
        #expect(g.firstIndex(of: "a", inStringArray: "absent") == nil)
    }

    /// The same bytes whether the file is mapped from disk (slices read with pread) or held in
    /// memory (copied from the buffer).
    @Test func slicesFromDiskEqualSlicesFromMemory() throws {
        let disk = try GGUFFile(path: ggufFixtures.appendingPathComponent("types_v3.gguf").path)
        let memory = try GGUFFile(file: MappedFile(bytes: fixtureBytes("types_v3.gguf"), name: "mem.gguf"))
        for t in disk.tensors where t.type != nil {
            let whole = Array(try memory.data(of: t))
            #expect(try disk.columnBytes(of: t, rows: 0..<t.rows, columns: 0..<t.columns) == whole, "\(t.name)")
            #expect(try memory.columnBytes(of: t, rows: 0..<t.rows, columns: 0..<t.columns) == whole, "\(t.name)")
            if t.rows > 1, let rb = t.rowByteCount {
                #expect(try disk.columnBytes(of: t, rows: 1..<t.rows, columns: 0..<t.columns) == Array(whole[rb...]), "\(t.name)")
            }
        }
        let q8 = try disk.tensor("q8_0")
        #expect(try disk.columnBytes(of: q8, rows: 0..<3, columns: 32..<64) == memory.columnBytes(of: q8, rows: 0..<3, columns: 32..<64))
        // MappedFile.copy checks bounds like bytes(at:count:).
        var out = [UInt8](repeating: 0, count: 8)
        #expect(throws: MappedFileError.outOfBounds(file: disk.path, offset: disk.file.size - 4, count: 8, size: disk.file.size)) {
            try out.withUnsafeMutableBytes { try disk.file.copy(offset: disk.file.size - 4, count: 8, into: $0.baseAddress!) }
        }
        try out.withUnsafeMutableBytes { try disk.file.copy(offset: 0, count: 4, into: $0.baseAddress!) }
        #expect(Array(out[0..<4]) == Array("GGUF".utf8))
    }

    @Test func unknownTensorTypeIsAnErrorOnlyWhenUsed() throws {
        let g = try GGUFFile(path: ggufFixtures.appendingPathComponent("types_v3.gguf").path)
        let t = try g.tensor("iq4_nl")
        #expect(t.type == nil && t.typeID == 20)
        do {
            _ = try g.rowBytes(of: t, rows: 0..<1)
            Issue.record("reading an IQ4_NL tensor should fail")
        } catch let e as GGUFError {
            #expect(e == .unknownTensorType(file: g.path, tensor: "iq4_nl", typeID: 20))
            #expect(e.description.contains("iq4_nl") && e.description.contains("20"))
        }
    }

    @Test func rowAndColumnSlices() throws {
        let g = try GGUFFile(path: ggufFixtures.appendingPathComponent("types_v3.gguf").path)
        let q8 = try g.tensor("q8_0")  // [64, 3]: 3 rows of 2 blocks of 34 bytes
        #expect(q8.rows == 3 && q8.columns == 64 && q8.rowByteCount == 68)
        let all = Array(try g.data(of: q8))
        #expect(Array(try g.rowBytes(of: q8, rows: 1..<3)) == Array(all[68..<204]))
        // Columns 32..<64 of rows 0..<3: the second block of each row.
        let cols = try g.columnBytes(of: q8, rows: 0..<3, columns: 32..<64)
        #expect(cols == Array(all[34..<68] + all[102..<136] + all[170..<204]))

        let q4k = try g.tensor("q4_k")  // [512, 2]: 2 blocks of 256 per row
        let k = Array(try g.data(of: q4k))
        #expect(try g.columnBytes(of: q4k, rows: 1..<2, columns: 256..<512) == Array(k[432..<576]))
        do {
            _ = try g.columnBytes(of: q4k, rows: 0..<2, columns: 0..<128)
            Issue.record("a split inside a Q4_K block must be refused")
        } catch let e as GGUFError {
            #expect(e == .splitCutsBlock(file: g.path, tensor: "q4_k", type: "Q4_K", blockSize: 256, columns: 0..<128))
            #expect(e.description.contains("q4_k") && e.description.contains("256") && e.description.contains("0..<128"))
        }
        #expect(throws: GGUFError.self) { try g.rowBytes(of: q4k, rows: 1..<3) }
        #expect(throws: GGUFError.self) { try g.columnBytes(of: q4k, rows: 0..<1, columns: 256..<768) }
        // Kernel-ready shard: the same bytes in an aligned WeightMatrix.
        let shard = try g.weightMatrix(of: q4k, rows: 0..<2, columns: 256..<512)
        #expect(shard.type == .q4_K && shard.rows == 2 && shard.cols == 256 && shard.rowBytes == 144)
        #expect(Array(UnsafeRawBufferPointer(start: shard.storage.pointer, count: shard.byteCount)) == Array(k[144..<288] + k[432..<576]))
        #expect(throws: GGUFError.self) { try g.weightMatrix(of: q4k, columns: 0..<300) }
        let whole = try g.weightMatrix(of: g.tensor("f32"))
        #expect(whole.rows == 3 && whole.cols == 4 && whole.storage.floats(count: 12)[11] == 11)
        // 3-D tensors are rows of dims[0]: [256, 2, 2] is 4 rows.
        #expect(try g.tensor("q6_k").rows == 4)
    }
}

@Suite struct GGUFCorruptionTests {
    /// Every prefix of a valid file that cuts off any header or tensor byte must be rejected
    /// with a typed error naming the file, never a crash. Only the writer's zero padding after
    /// the last tensor may be dropped (the data is then complete, as llama.cpp also accepts).
    @Test func everyTruncationPointIsAnError() throws {
        let bytes = try fixtureBytes("types_v3.gguf")
        let full = try GGUFFile(file: MappedFile(bytes: bytes, name: "full"))
        // End of the last tensor (iq4_nl: one 18-byte IQ4_NL block) in the full file.
        let last = try full.tensor("iq4_nl")
        let dataEnd = full.dataStart + last.offset + 18
        #expect(dataEnd < bytes.count && bytes[dataEnd...].allSatisfy { $0 == 0 })
        for n in 0..<bytes.count {
            let f = MappedFile(bytes: Array(bytes[0..<n]), name: "cut\(n).gguf")
            do {
                _ = try GGUFFile(file: f)
                if n < dataEnd { Issue.record("prefix of \(n) bytes parsed without error") }
            } catch let e as GGUFError {
                #expect(e.description.contains("cut\(n).gguf"))
            }
        }
    }

    func parse(_ bytes: [UInt8]) throws { _ = try GGUFFile(file: MappedFile(bytes: bytes, name: "bad.gguf")) }

    func patch(_ bytes: [UInt8], at offset: Int, u64 value: UInt64) -> [UInt8] {
        var b = bytes
        withUnsafeBytes(of: value.littleEndian) { for i in 0..<8 { b[offset + i] = $0[i] } }
        return b
    }

    @Test func corruptHeaders() throws {
        let good = try fixtureBytes("types_v3.gguf")
        var magic = good; magic[0] = 0x58
        #expect(throws: GGUFError.self) { try parse(magic) }
        var v4 = good; v4[4] = 4
        #expect(throws: GGUFError.unsupportedVersion(file: "bad.gguf", version: 4)) { try parse(v4) }
        // Bogus counts: refused before any allocation sized by them.
        #expect(throws: GGUFError.self) { try parse(patch(good, at: 8, u64: .max)) }
        #expect(throws: GGUFError.self) { try parse(patch(good, at: 16, u64: 1 << 60)) }
        // First key length (offset 24): huge.
        #expect(throws: GGUFError.self) { try parse(patch(good, at: 24, u64: 1 << 62)) }
        // First value type (after the 8-byte length and the 20-byte key "general.architecture").
        var badType = good; badType[24 + 8 + 20] = 77
        #expect(throws: GGUFError.self) { try parse(badType) }
    }

    @Test func hugeArrayCountIsRefused() throws {
        // A hand-built file: one key holding an array of u64 claiming 2^40 elements.
        var b: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        u32(3); u64(0); u64(1)
        u64(3); b += Array("arr".utf8); u32(9); u32(10); u64(1 << 40); u64(7)
        do {
            try parse(b)
            Issue.record("accepted a 2^40-element array in a tiny file")
        } catch let e as GGUFError {
            #expect(e.description.contains("arr"))
        }
        // Nesting beyond the limit is refused, not recursed into.
        var deep: [UInt8] = Array("GGUF".utf8)
        b = deep
        u32(3); u64(0); u64(1); u64(1); b += Array("n".utf8); u32(9)
        for _ in 0..<20 { u32(9); u64(1) }
        u32(4); u64(1); u32(5)
        deep = b
        #expect(throws: GGUFError.self) { try parse(deep) }
        // An empty array (the Python writer cannot produce one) is valid.
        b = Array("GGUF".utf8)
        u32(3); u64(0); u64(1); u64(1); b += Array("e".utf8); u32(9); u32(4); u64(0)
        let g = try GGUFFile(file: MappedFile(bytes: b, name: "empty-array.gguf"))
        #expect(try g.intArray("e") == [])
    }

    @Test func tensorInfoCorruption() throws {
        let good = try fixtureBytes("align64_v3.gguf")
        let g = try GGUFFile(file: MappedFile(bytes: good, name: "ok"))
        // Locate tensor "a"'s info: its name is followed by n_dims, ne[0], type, offset.
        let name = Array("a".utf8)
        var at = 0
        for i in 0..<(good.count - 9) where good[i..<(i + 8)] == [1, 0, 0, 0, 0, 0, 0, 0][...] && good[i + 8] == name[0] && good[i + 9] == 1 {
            at = i + 9; break  // n_dims position
        }
        #expect(at > 0 && g.tensors.count == 2)
        var dims5 = good; dims5[at] = 5
        #expect(throws: GGUFError.self) { try parse(dims5) }
        // Offset not a multiple of the alignment: ne[0] at at+4, type at at+12, offset at at+16.
        #expect(throws: GGUFError.self) { try parse(patch(good, at: at + 16, u64: 3)) }
        // Offset far beyond the file.
        #expect(throws: GGUFError.self) { try parse(patch(good, at: at + 16, u64: 1 << 50)) }
        // Dimension so large the data cannot be in the file.
        #expect(throws: GGUFError.self) { try parse(patch(good, at: at + 4, u64: 1 << 33)) }
    }

    /// Seeded random byte corruption of the header region: each variant either parses or
    /// throws a typed error; none may crash or hang.
    @Test func seededGarbage() throws {
        let good = try fixtureBytes("types_v3.gguf")
        var rng = SplitMix64(seed: 42)
        var rejected = 0
        for _ in 0..<3000 {
            var b = good
            for _ in 0..<Int(rng.next() % 4 + 1) {
                let pos = Int(rng.next() % 900)  // header + metadata + tensor infos
                b[pos] = UInt8(truncatingIfNeeded: rng.next())
            }
            do { try parse(b) } catch is GGUFError { rejected += 1 }
        }
        // Most flips land in string bytes and stay valid; many must still be caught.
        #expect(rejected > 300)
    }

    @Test func missingFileNamesThePath() {
        #expect(throws: MappedFileError.cannotOpen(file: "/nonexistent/x.gguf", reason: "No such file or directory")) {
            _ = try GGUFFile(path: "/nonexistent/x.gguf")
        }
    }
}



@Suite struct GGUFRealModelTests {
    @Test func gemma3_270m_metadataAndTensors() throws {
        let path = try TestPaths.requireDefaultModel()
        let g = try GGUFFile(path: path)
        #expect(g.version == 3)
        #expect(g.tensors.count == 236)
        #expect(g.metadata.count == 33 - 3 || g.metadata.count == 33)
        #expect(try g.string("general.architecture") == "gemma3")
        #expect(try g.int("gemma3.context_length") == 32768)
        #expect(try g.int("gemma3.embedding_length") == 640)
        #expect(try g.int("gemma3.block_count") == 18)
        #expect(try g.int("gemma3.feed_forward_length") == 2048)
        #expect(try g.int("gemma3.attention.head_count") == 4)
        #expect(try g.int("gemma3.attention.head_count_kv") == 1)
        #expect(try g.int("gemma3.attention.key_length") == 256)
        #expect(try g.int("gemma3.attention.value_length") == 256)
        #expect(try g.float("gemma3.attention.layer_norm_rms_epsilon") == Double(Float(1e-6)))
        #expect(try g.float("gemma3.rope.freq_base") == 1e6)
        #expect(try g.int("gemma3.attention.sliding_window") == 512)
        #expect(try g.string("tokenizer.ggml.model") == "llama")
        #expect(try g.string("tokenizer.ggml.pre") == "default")
        #expect(try g.stringArray("tokenizer.ggml.tokens").count == 262_144)
        #expect(try g.floatArray("tokenizer.ggml.scores").count == 262_144)
        #expect(try g.intArray("tokenizer.ggml.token_type").count == 262_144)
        #expect(try g.int("tokenizer.ggml.bos_token_id") == 2)
        #expect(try g.int("tokenizer.ggml.eos_token_id") == 1)
        #expect(try g.int("tokenizer.ggml.unknown_token_id") == 3)
        #expect(try g.int("tokenizer.ggml.padding_token_id") == 0)
        #expect(try g.bool("tokenizer.ggml.add_bos_token") == true)
        #expect(try g.bool("tokenizer.ggml.add_eos_token") == false)
        #expect(try g.bool("tokenizer.ggml.add_space_prefix") == false)
        #expect(try g.int("general.file_type") == 15)

        let embd = try g.tensor("token_embd.weight")
        #expect(embd.dims == [640, 262_144])
        #expect(try g.weightType(of: embd) == .q8_0)
        #expect(!g.hasTensor("output.weight"))  // tied embeddings
        #expect(try g.weightType(of: g.tensor("blk.0.attn_q.weight")) == .q5_0)
        #expect(try g.weightType(of: g.tensor("blk.0.attn_output.weight")) == .q4_K)
        #expect(try g.weightType(of: g.tensor("output_norm.weight")) == .f32)
        #expect(try g.tensor("blk.0.attn_q.weight").dims == [640, 1024])
        // Every tensor's data lies inside the file and every type is one the kernels read.
        var total = 0
        for t in g.tensors { total += try g.data(of: t).count }
        #expect(total <= g.file.size - g.dataStart)
        // Found in the file's bytes, as the decoded vocabulary has it.
        let tokens = try g.stringArray("tokenizer.ggml.tokens")
        #expect(g.firstIndex(of: "<end_of_turn>", inStringArray: "tokenizer.ggml.tokens") == tokens.firstIndex(of: "<end_of_turn>"))
        #expect(g.firstIndex(of: "<end_of_turn>", inStringArray: "tokenizer.ggml.tokens") != nil)
        // Norms carry the +1 offset baked in by llama.cpp's converter (mean ≈ 26 for output_norm).
        let norm = try g.data(of: g.tensor("output_norm.weight")).bindMemory(to: Float.self)
        let mean = norm.reduce(0, +) / Float(norm.count)
        #expect(mean > 20 && mean < 32)
    }
}

/// Resident bytes of the mapping that starts at `base`, from /proc/self/smaps (nil if absent).
func residentBytesOfMapping(at base: UnsafeRawPointer) -> Int? {
    // /proc files report size 0, so read them to the end rather than by their stat size.
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps"),
          let data = try? handle.readToEnd() else { return nil }
    let text = String(decoding: data, as: UTF8.self)
    let start = String(UInt(bitPattern: base), radix: 16)
    var inside = false
    for line in text.split(separator: "\n") {
        if let dash = line.firstIndex(of: "-"), !line.hasPrefix("Rss"), line.split(separator: " ").count >= 5,
           line[line.startIndex..<dash].allSatisfy(\.isHexDigit) {
            inside = line[line.startIndex..<dash] == start
        } else if inside, line.hasPrefix("Rss:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
        }
    }
    return nil
}

@Suite struct GGUFResidencyTests {
    /// A rank's slice is read from the file, not through the mapping: after copying a quarter
    /// of the 178 MB embedding (44 MB) the mapping holds almost nothing in this process's
    /// resident set (the header pages are dropped once parsed). Reading through the mapping
    /// would leave all 44 MB of it resident here (the loader's peak, multiplied by the ranks).
    @Test func slicesDoNotEnterTheResidentSet() throws {
        let path = try TestPaths.requireDefaultModel()
        let g = try GGUFFile(path: path)
        let embd = try g.tensor("token_embd.weight")
        let quarter = try g.weightMatrix(of: embd, rows: 0..<(embd.rows / 4))
        #expect(quarter.byteCount == embd.byteCount.map { $0 / 4 })
        // Same bytes as through the mapping (a small sample, read last so it cannot mask the check).
        let rss = residentBytesOfMapping(at: g.file.base)
        #expect(rss != nil)
        // 1 MiB: a few header pages may be faulted in again by other readers of this object.
        #expect((rss ?? .max) < 1 << 20, "mapping resident after the copy: \(rss ?? -1) bytes")
        let viaMapping = try g.rowBytes(of: embd, rows: 1000..<1001)
        #expect(Array(UnsafeRawBufferPointer(start: quarter.row(1000), count: quarter.rowBytes)) == Array(viaMapping))
    }
}
