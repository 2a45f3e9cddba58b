// A read-only view of a whole file's bytes: memory-mapped from disk (so a rank only pages in
// the slices it touches), or an owned copy of in-memory bytes (tests build corrupt files this
// way). Every slice is bounds-checked; nothing here knows about any file format.
import Foundation

/// Errors opening or slicing a `MappedFile`.
public enum MappedFileError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case outOfBounds(file: String, offset: Int, count: Int, size: Int)

    public var description: String {
        switch self {
        case let .cannotOpen(f, r): return "cannot open \(f): \(r)"
        case let .outOfBounds(f, o, c, s):
            return "\(f): byte range \(o)..<\(o &+ c) is outside the file (\(s) bytes)"
        }
    }
}

/// The bytes of one file, read-only, alive as long as this object.
public final class MappedFile: @unchecked Sendable {
    // @unchecked: the memory is never written after init and is released only in deinit.
    /// Path (or name, for in-memory bytes) used in every error message.
    public let path: String
    /// Size in bytes.
    public let size: Int
    /// First byte (valid for `size` bytes; a 1-byte dummy allocation when the file is empty).
    public let base: UnsafeRawPointer
    private let isMapped: Bool
    /// The open file behind a mapping (-1 for in-memory bytes): `copy` reads slices with pread
    /// so a rank's copy never maps the source pages into its resident set.
    private let descriptor: Int32

    /// Maps the whole file read-only. A missing, unreadable or non-regular file is a
    /// `cannotOpen` error naming the path.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw MappedFileError.cannotOpen(file: path, reason: String(cString: strerror(errno))) }
        var keepOpen = false
        defer { if !keepOpen { close(fd) } }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw MappedFileError.cannotOpen(file: path, reason: "fstat: " + String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw MappedFileError.cannotOpen(file: path, reason: "not a regular file")
        }
        size = Int(st.st_size)
        if size == 0 {
            // mmap of 0 bytes fails with EINVAL; an empty file is the format parser's to report.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            isMapped = false
            descriptor = -1
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw MappedFileError.cannotOpen(file: path, reason: "mmap: " + String(cString: strerror(errno)))
        }
        base = UnsafeRawPointer(p)
        isMapped = true
        descriptor = fd
        keepOpen = true
    }

    /// An owned, 64-byte-aligned copy of `bytes`, reported as `name` in errors.
    public init(bytes: [UInt8], name: String) {
        path = name
        size = bytes.count
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        bytes.withUnsafeBytes { src in
            if let s = src.baseAddress, !bytes.isEmpty { p.copyMemory(from: s, byteCount: bytes.count) }
        }
        base = UnsafeRawPointer(p)
        isMapped = false
        descriptor = -1
    }

    deinit {
        if isMapped { munmap(UnsafeMutableRawPointer(mutating: base), size) } else { base.deallocate() }
        if descriptor >= 0 { close(descriptor) }
    }

    /// `count` bytes starting at `offset`; throws if any part lies outside the file
    /// (overflow-safe: huge offsets from a corrupt header do not wrap around).
    public func bytes(at offset: Int, count: Int) throws -> UnsafeRawBufferPointer {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw MappedFileError.outOfBounds(file: path, offset: offset, count: count, size: size)
        }
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }

    /// Copies `count` bytes at `offset` into `destination` (bounds-checked like `bytes`). A mapped
    /// file is read with pread, so the bytes pass through the page cache without entering this
    /// process's resident set: a rank's peak memory is its copies, not its copies plus every
    /// source page it read (the whole 178 MB embedding at one rank). A read error or a file that
    /// shrank since it was opened is `cannotOpen` naming the file.
    public func copy(offset: Int, count: Int, into destination: UnsafeMutableRawPointer) throws {
        _ = try bytes(at: offset, count: count)
        guard isMapped else {
            if count > 0 { destination.copyMemory(from: base + offset, byteCount: count) }
            return
        }
        var done = 0
        while done < count {
            // Linux transfers at most 0x7ffff000 bytes per call; a short read just continues.
            let n = pread(descriptor, destination + done, min(count - done, 1 << 30), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw MappedFileError.cannotOpen(file: path, reason: "pread at \(offset + done): " + String(cString: strerror(errno)))
            }
            if n == 0 {
                throw MappedFileError.cannotOpen(file: path, reason: "pread at \(offset + done): the file ended early (it changed after it was opened)")
            }
            done += n
        }
    }

    /// Tells the kernel this process no longer needs the pages of `count` bytes at `offset`
    /// (after a rank copied its slice out): they leave the resident set and fault back in from
    /// the file if read again. A no-op for in-memory bytes, whose contents it would destroy.
    public func dropResidency(offset: Int, count: Int) {
        guard isMapped, offset >= 0, count > 0, offset < size else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = offset / page * page
        let hi = min(size, offset + count)
        _ = madvise(UnsafeMutableRawPointer(mutating: base + lo), hi - lo, MADV_DONTNEED)
    }

    /// The whole file.
    public var allBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
}
