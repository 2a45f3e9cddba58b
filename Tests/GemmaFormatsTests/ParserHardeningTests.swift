// Cases found by fuzzing (Scripts/fuzz.sh) or listed in docs/RELIABILITY.md's bad-input table,
// each pinned by name: the input that crashed, and what it must give now.
import Foundation
import Testing
@testable import GemmaFormats
import GemmaTestSupport

@Suite struct ParserHardeningTests {
    /// libFuzzer (gguf target): a u64 metadata value above Int.max made `description` call
    /// itself until the stack overflowed (`inspect` prints every value).
    @Test func u64AboveIntMaxPrints() {
        #expect(GGUFValue.uint64(.max).description == "18446744073709551615")
        #expect(GGUFValue.array(elementType: .uint64, values: [.uint64(1 << 63)]).description.contains("9223372036854775808"))
    }

    /// Tensor table entries partly sharing bytes (different sizes at one offset): refused,
    /// naming both tensors.
    @Test func overlappingGGUFTensorsAreRefused() throws {
        var bytes = [UInt8](try Data(contentsOf: TestPaths.fixture("gguf/types_v3.gguf")))
        let g = try GGUFFile(file: MappedFile(bytes: bytes, name: "types_v3.gguf"))
        let sized = g.tensors.filter { ($0.byteCount ?? 0) > 0 }
        try #require(sized.count >= 2)
        let (first, second) = (sized[0], sized[1])
        // The entry: u64 name length, name, u32 dimension count, u64 per dimension, u32 type, u64 offset.
        let key = withUnsafeBytes(of: UInt64(second.name.utf8.count).littleEndian, Array.init) + Array(second.name.utf8)
        let at = try #require((0...(bytes.count - key.count)).first { Array(bytes[$0..<($0 + key.count)]) == key })
        let offsetField = at + key.count + 4 + 8 * second.dims.count + 4
        withUnsafeBytes(of: UInt64(first.offset).littleEndian) { bytes.replaceSubrange(offsetField..<(offsetField + 8), with: $0) }
        do {
            _ = try GGUFFile(file: MappedFile(bytes: bytes, name: "overlap.gguf"))
            Issue.record("overlapping tensors were accepted")
        } catch let GGUFError.corrupt(_, reason) {
            #expect(reason.contains("overlap") && reason.contains(first.name) && reason.contains(second.name), "\(reason)")
        }
    }

    static func safetensors(_ header: String, dataBytes: Int) -> MappedFile {
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out += Array(header.utf8) + [UInt8](repeating: 0, count: dataBytes)
        return MappedFile(bytes: out, name: "fuzz.safetensors")
    }

    /// Shapes whose byte size overflows Int, offsets near Int.max, and overlapping tensors: each
    /// a header error, never an arithmetic trap (debug) or a wrapped size (release, -Ounchecked).
    @Test func absurdSafetensorsHeadersAreErrors() {
        let cases: [(String, String)] = [
            (#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#, "byte size overflows"),
            (#"{"a":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,9223372036854775807]}}"#, "size overflows"),
            (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775803,9223372036854775807]}}"#, "end overflows"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, "overlap"),
            (#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, "negative"),
            (#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, "dtype"),
        ]
        for (header, what) in cases {
            #expect(throws: SafetensorsError.self, "\(what)") {
                _ = try SafetensorsArchive(regions: [Self.safetensors(header, dataBytes: 16)])
            }
        }
        // Two names for the same bytes (a tied weight stored once) are fine.
        #expect(throws: Never.self) {
            _ = try SafetensorsArchive(regions: [Self.safetensors(
                #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, dataBytes: 16)])
        }
        // The same layout without the overlap is fine.
        #expect(throws: Never.self) {
            _ = try SafetensorsArchive(regions: [Self.safetensors(
                #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, dataBytes: 16)])
        }
    }
}
