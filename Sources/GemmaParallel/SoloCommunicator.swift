// The world of one: every collective is the identity. Used when gemma-node runs without
// mpirun, so a single process pays nothing for being "distributed".

/// A communicator for a single rank: rank 0 of size 1, all collectives are no-ops.
public final class SoloCommunicator: Communicator {
    public let rank = 0
    public let size = 1

    public init() {}

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
    public func broadcast(_ bytes: [UInt8], root: Int, idle: Bool) throws -> [UInt8] {
        guard root == 0 else {
            throw CommunicatorError.transport(operation: "broadcast", code: -1, message: "root \(root) outside 0..<1")
        }
        return bytes
    }
    public func allGather(_ record: [Float]) throws -> [Float] { record }
    public func barrier() throws {}
}
