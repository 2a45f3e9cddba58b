// Closing a connection after an early refusal without stalling the client or losing the answer.
//
// A completion request can be refused before its body has been read: 413 for a body over the
// limit (announced by Content-Length, or found while it streams in), 401 for a bad key. Such a
// response carries `Connection: close` (HTTPServer.errorResponse). On its own, Hummingbird
// would then either read and discard the rest of the body without any bound (a keep-alive
// request) or stop reading and wait for the client to close (a `Connection: close` request):
// a client that sends its whole body before it reads, as most do, then blocks in its send for
// good, and the connection is held as long as the client keeps it.
//
// The same stall follows any answer given before the body of a `Connection: close` request was
// read, whoever gave it: Hummingbird's own 404 for an unknown path or method does not read the
// body either. So the handler also lingers when a response ends while such a request's body
// is still arriving (keep-alive requests are left to Hummingbird, which reads their body on).
//
// This handler does what HTTP/1.1 servers call a lingering close. Once the end of a response
// marked `Connection: close` has been written, it shuts the sending side (after the response
// has left, so the client reads the answer and then an end of stream), reads and discards
// whatever the client still sends (a pipelined request included: the answer said the
// connection ends), and closes the connection when the client closes, when 64 MiB have been
// discarded or when 10 s have passed. Closing at once instead would leave unread bytes in
// the socket, and the kernel would answer them with a reset that can destroy the response
// before the client has read it. The bounds keep a client that never stops sending from
// holding the connection: 10 s is ample for a client to finish sending a body over loopback
// or a LAN after the answer arrived, and past 64 MiB the client is not sending a request
// body of any sensible size.
import NIOCore
import NIOHTTPTypes

final class LingeringCloseAfterRefusal: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    static let lingerTime = TimeAmount.seconds(10)
    static let maxDiscardedBytes = 64 << 20

    /// The response being written said `Connection: close`.
    private var closeAfterResponse = false
    /// A request's head has arrived and its end has not.
    private var requestOpen = false
    /// The open request said `Connection: close`.
    private var requestSaysClose = false
    /// The response has been written and the sending side shut: input is only discarded now.
    private var lingering = false
    private var discardedBytes = 0
    private var timer: Scheduled<Void>?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard lingering else {
            switch unwrapInboundIn(data) {
            case .head(let request):
                requestOpen = true
                requestSaysClose = request.headerFields[.connection]?.lowercased().contains("close") ?? false
            case .end:
                requestOpen = false
            case .body:
                break
            }
            context.fireChannelRead(data)
            return
        }
        if case .body(let bytes) = unwrapInboundIn(data) {
            discardedBytes += bytes.readableBytes
            if discardedBytes > Self.maxDiscardedBytes { context.close(promise: nil) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard lingering else {
            context.fireChannelReadComplete()
            return
        }
        // Nothing was passed on, so the request handler (which may have stopped reading) asks
        // for no more: keep reading here until the client closes.
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            closeAfterResponse = response.headerFields[.connection]?.lowercased() == "close"
            context.write(data, promise: promise)
        case .end where !lingering && (closeAfterResponse || (requestOpen && requestSaysClose)):
            closeAfterResponse = false
            context.writeAndFlush(data, promise: promise)
            startLingering(context: context)
        default:
            context.write(data, promise: promise)
        }
    }

    private func startLingering(context: ChannelHandlerContext) {
        lingering = true
        // The shutdown of the sending side waits for the writes still pending (NIO shuts the
        // socket only once they have been written), so the response leaves first.
        context.close(mode: .output, promise: nil)
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}
