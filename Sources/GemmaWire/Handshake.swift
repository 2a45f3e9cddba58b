// The start-up check every rank's Hello goes through on the coordinator: same protocol
// version, same model, same world. A mismatch stops the job with a message naming the rank.

/// Throws a `WireError` naming `remote.rank` unless it speaks the coordinator's (`local`)
/// protocol version, loaded the same model and agrees on the world size.
public func checkHello(local: Hello, remote: Hello) throws {
    guard remote.protocolVersion == local.protocolVersion else {
        throw WireError.rankVersionMismatch(rank: remote.rank, remote: remote.protocolVersion, local: local.protocolVersion)
    }
    guard remote.modelFingerprint == local.modelFingerprint else {
        throw WireError.fingerprintMismatch(rank: remote.rank, remote: remote.modelFingerprint, local: local.modelFingerprint)
    }
    guard remote.worldSize == local.worldSize else {
        throw WireError.worldMismatch(rank: remote.rank, detail: "it sees \(remote.worldSize) ranks, coordinator sees \(local.worldSize)")
    }
    guard remote.rank < remote.worldSize else {
        throw WireError.worldMismatch(rank: remote.rank, detail: "rank \(remote.rank) does not exist in a world of \(remote.worldSize)")
    }
}
