// Safetensors reader: hand-built files (F32/F16/BF16, metadata, slices), every header defect
// as a typed error naming the file and tensor, and the sharded fixture read through its index.
import Foundation
import Testing
import GemmaFormats
import GemmaKernels
import GemmaTestSupport

/// Builds a safetensors file from (name, dtype, shape, raw bytes) in a fresh temp dir.
func writeSafetensors(_ tensors: [(String, String, [Int], [UInt8])], headerOverride: String? = nil, name: String = "model.safetensors") throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    var entries: [String] = [#""__metadata__": {"format": "pt"}"#]
    var data: [UInt8] = []
    for (n, dtype, shape, bytes) in tensors {
        entries.append("\"\(n)\": {\"dtype\": \"\(dtype)\", \"shape\": \(shape), \"data_offsets\": [\(data.count), \(data.count + bytes.count)]}")
        data += bytes
    }
    let header = Array((headerOverride ?? "{" + entries.joined(separator: ", ") + "}").utf8)
    var file: [UInt8] = []
    withUnsafeBytes(of: UInt64(header.count).littleEndian) { file += $0 }
    file += header + data
    try Data(file).write(to: dir.appendingPathComponent(name))
    return dir
}

func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

@Suite("Safetensors")
struct SafetensorsTests {
    let matrix: [Float] = (0..<12).map { Float($0) * 0.5 - 1 }  // [3, 4]

    @Test func readsDTypesShapesAndSlices() throws {
        let halves: [Float16] = [1.5, -2, 0.25, 65504]
        let bf: [UInt16] = [1, -3.5, 1e30, 0.1].map { floatToBF16($0) }
        let dir = try writeSafetensors([("a", "F32", [3, 4], bytes(matrix)), ("b", "F16", [2, 2], bytes(halves)), ("c", "BF16", [4], bytes(bf))])
        defer { try? FileManager.default.removeItem(at: dir) }
        let st = try SafetensorsArchive(directory: dir)
        #expect(Set(st.tensors.keys) == ["a", "b", "c"])
        let a = try st.info("a")
        #expect(a.dtype == .f32 && a.shape == [3, 4] && a.rows == 3 && a.cols == 4 && a.byteCount == 48)
        #expect(try st.floats("a") == matrix)
        #expect(try st.floats("a", rows: 1..<3, cols: 1..<3) == [matrix[5], matrix[6], matrix[9], matrix[10]])
        #expect(try st.floats("b") == halves.map { Float($0) })
        #expect(try st.floats("c") == bf.map(bf16ToFloat))
        // Raw copy keeps the stored dtype: a column slice of F16 is 2 bytes per value.
        var raw = [UInt16](repeating: 0, count: 2)
        try raw.withUnsafeMutableBytes { try st.copySlice("b", rows: 0..<2, cols: 1..<2, into: $0.baseAddress!) }
        #expect(raw == [halves[1].bitPattern, halves[3].bitPattern])
        #expect(throws: SafetensorsError.sliceOutOfRange(tensor: "a", shape: [3, 4], rows: 0..<4, cols: 0..<4)) {
            try st.floats("a", rows: 0..<4, cols: 0..<4)
        }
        #expect(throws: SafetensorsError.missingTensor("zz")) { try st.info("zz") }
        // Evicting pages is only a residency hint: the data reads back the same.
        st.evict("a")
        #expect(try st.floats("a") == matrix)
    }

    @Test func headerDefectsAreTypedErrors() throws {
        func error(_ dir: URL) -> Error? {
            defer { try? FileManager.default.removeItem(at: dir) }
            do { _ = try SafetensorsArchive(directory: dir); return nil } catch { return error }
        }
        let unsupported = error(try writeSafetensors([("i", "I8", [4], [1, 2, 3, 4])]))
        #expect((unsupported as? SafetensorsError).map { if case .unsupportedDType(_, "i", "I8") = $0 { true } else { false } } == true)
        let badSpan = error(try writeSafetensors([], headerOverride: #"{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#))
        #expect(String(describing: badSpan ?? SafetensorsError.missingTensor("")).contains("tensor x: data_offsets span 4 bytes, shape [2] of F32 needs 8"))
        let past = error(try writeSafetensors([], headerOverride: #"{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#))
        #expect((past as? SafetensorsError).map { if case .truncated(_, "x", _, _) = $0 { true } else { false } } == true)
        let notJSON = error(try writeSafetensors([], headerOverride: "not json"))
        #expect(String(describing: notJSON ?? SafetensorsError.missingTensor("")).contains("header is not a JSON object"))
        // Length field larger than the file.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(bytes([UInt64(1000).littleEndian]) + [0x7b, 0x7d]).write(to: dir.appendingPathComponent("model.safetensors"))
        let long = error(dir)
        #expect(String(describing: long ?? SafetensorsError.missingTensor("")).contains("header length 1000 exceeds the file size 10"))
        // Truncation names the file and the tensor whose data is cut.
        let cut = try writeSafetensors([("a", "F32", [3, 4], bytes(matrix))])
        let file = cut.appendingPathComponent("model.safetensors")
        let all = try Data(contentsOf: file)
        try all.prefix(all.count - 1).write(to: file)
        let truncated = error(cut)
        #expect(String(describing: truncated ?? SafetensorsError.missingTensor("")).contains("model.safetensors is truncated: tensor a needs bytes up to \(all.count)"))
    }

    @Test func shardedCheckpointThroughIndex() throws {
        let hf = TestPaths.fixture("hf")
        let sharded = try SafetensorsArchive(directory: hf.appendingPathComponent("gemma3_sharded"))
        let single = try SafetensorsArchive(directory: hf.appendingPathComponent("gemma3_pattern"))
        #expect(sharded.files.count == 3)
        #expect(Set(sharded.tensors.keys) == Set(single.tensors.keys))
        #expect(Set(sharded.tensors.values.map(\.fileIndex)) == [0, 1, 2])
        for name in ["model.embed_tokens.weight", "model.layers.6.mlp.down_proj.weight", "model.norm.weight"] {
            #expect(try sharded.floats(name) == single.floats(name), "\(name)")
        }
    }
}
