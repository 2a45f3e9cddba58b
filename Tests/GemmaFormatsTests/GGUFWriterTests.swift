// GGUF writer tests: a file with every metadata value type (arrays of strings, numbers, bools,
// nested arrays) and tensors of several types is read back by our reader with the same keys in
// the same order, the same values, tensor infos, aligned offsets and data; and bad input to
// the writer is refused with a typed error. (The `gguf` Python reader reading a written file
// is tested on a synthetic model, GemmaModelTests/SyntheticModelTests.)
import Foundation
import Testing
import GemmaFormats
import GemmaKernels
import GemmaTestSupport

@Suite("GGUF writer")
struct GGUFWriterTests {
    static let values: [(String, GGUFValue)] = [
        ("general.architecture", .string("gemma3")),
        ("t.u8", .uint8(200)), ("t.i8", .int8(-7)), ("t.u16", .uint16(65000)), ("t.i16", .int16(-30000)),
        ("t.u32", .uint32(4_000_000_000)), ("t.i32", .int32(-2_000_000_000)),
        ("t.u64", .uint64(1 << 40)), ("t.i64", .int64(-(1 << 40))),
        ("t.f32", .float32(0.1)), ("t.f64", .float64(1e-300)), ("t.bool", .bool(true)),
        ("t.string", .string("héllo \u{1F600}")), ("t.empty", .string("")),
        ("t.strings", .array(elementType: .string, values: ["<pad>", "<eos>", "", "▁the", "ü"].map { .string($0) })),
        ("t.floats", .array(elementType: .float32, values: [1.5, -2, 0].map { .float32($0) })),
        ("t.ints", .array(elementType: .int32, values: [1, -2, 3].map { .int32($0) })),
        ("t.bools", .array(elementType: .bool, values: [true, false, true].map { .bool($0) })),
        ("t.nested", .array(elementType: .array, values: [.array(elementType: .uint8, values: [.uint8(1), .uint8(2)])])),
        ("t.emptyArray", .array(elementType: .uint32, values: [])),
    ]

    func writeSample(alignment: UInt32?) throws -> (path: String, data: [[UInt8]], writer: GGUFWriter) {
        var w = GGUFWriter()
        for (k, v) in Self.values { try w.add(k, v) }
        if let alignment { try w.add("general.alignment", .uint32(alignment)) }
        var rng = SplitMix64(seed: 5)
        let f32 = rng.floats(7 * 3)
        var q8 = [UInt8](repeating: 0, count: 34 * 2 * 3)
        let src = rng.floats(64 * 3)
        try src.withUnsafeBufferPointer { s in try q8.withUnsafeMutableBytes { try quantize(.q8_0, s.baseAddress!, count: 192, into: $0.baseAddress!) } }
        let norm = rng.floats(5)
        let data: [[UInt8]] = [f32.withUnsafeBytes { Array($0) }, q8, norm.withUnsafeBytes { Array($0) }]
        try w.addTensor(GGUFTensorEntry(name: "a.weight", dims: [7, 3], typeID: 0, byteCount: 84))
        try w.addTensor(GGUFTensorEntry(name: "b.weight", dims: [64, 3], typeID: WeightType.q8_0.rawValue, byteCount: q8.count))
        try w.addTensor(GGUFTensorEntry(name: "c.norm", dims: [5], typeID: 0, byteCount: 20))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-writer-\(UUID().uuidString).gguf").path
        try w.write(to: path, data: data)
        return (path, data, w)
    }

    @Test(arguments: [nil, 64] as [UInt32?])
    func writtenFileReadsBack(alignment: UInt32?) throws {
        let (path, data, w) = try writeSample(alignment: alignment)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f = try GGUFFile(path: path)
        #expect(f.version == 3)
        #expect(f.alignment == Int(alignment ?? 32))
        #expect(f.metadataKeys == w.metadata.map(\.key))
        for (k, v) in w.metadata { #expect(f.value(k) == v, "\(k)") }
        #expect(try f.stringArray("t.strings") == ["<pad>", "<eos>", "", "▁the", "ü"])
        #expect(f.tensors.map(\.name) == ["a.weight", "b.weight", "c.norm"])
        #expect(f.tensors.map(\.dims) == [[7, 3], [64, 3], [5]])
        #expect(f.tensors.map(\.typeID) == [0, 8, 0])
        for (i, t) in f.tensors.enumerated() {
            #expect((f.dataStart + t.offset) % f.alignment == 0)
            let bytes = try f.data(of: t)
            #expect(Array(bytes) == data[i], "\(t.name)")
        }
        let layout = w.layout()
        #expect(layout.fileSize == (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int))
        #expect(layout.tensorOffsets == f.tensors.map { f.dataStart + $0.offset })
    }

    @Test func badInputIsRefused() throws {
        var w = GGUFWriter()
        try w.add("k", .uint32(1))
        #expect(throws: GGUFWriteError.duplicateKey("k")) { try w.add("k", .uint32(2)) }
        #expect(throws: GGUFWriteError.badAlignment(48)) { try w.add("general.alignment", .uint32(48)) }
        #expect(throws: GGUFWriteError.self) { try w.add("mixed", .array(elementType: .uint32, values: [.uint32(1), .string("x")])) }
        #expect(throws: GGUFWriteError.self) { try w.addTensor(GGUFTensorEntry(name: "q", dims: [40, 2], typeID: 8, byteCount: 68)) }
        #expect(throws: GGUFWriteError.self) { try w.addTensor(GGUFTensorEntry(name: "q", dims: [64, 2], typeID: 8, byteCount: 100)) }
        #expect(throws: GGUFWriteError.self) { try w.addTensor(GGUFTensorEntry(name: "q", dims: [], typeID: 0, byteCount: 0)) }
        try w.addTensor(GGUFTensorEntry(name: "q", dims: [64, 2], typeID: 8, byteCount: 136))
        #expect(throws: GGUFWriteError.duplicateTensor("q")) { try w.addTensor(GGUFTensorEntry(name: "q", dims: [64, 2], typeID: 8, byteCount: 136)) }
        #expect(throws: GGUFWriteError.self) { try w.write(to: "/nonexistent-folder/x.gguf", data: [[UInt8](repeating: 0, count: 136)]) }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-writer-bad-\(UUID().uuidString).gguf").path
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        #expect(throws: GGUFWriteError.self) { try w.write(to: tmp, data: [[UInt8](repeating: 0, count: 10)]) }
        let sink = try GGUFFileSink(path: tmp, writer: w)
        #expect(throws: GGUFWriteError.self) { try [UInt8](repeating: 0, count: 8).withUnsafeBytes { try sink.write(tensor: 0, at: 130, $0) } }
        #expect(throws: GGUFWriteError.self) { try [UInt8](repeating: 0, count: 8).withUnsafeBytes { try sink.write(tensor: 1, at: 0, $0) } }
        try sink.close()
    }
}
