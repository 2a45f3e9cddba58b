// The HTTP side on rank 0: Hummingbird routes for /v1/chat/completions, /v1/completions,
// /v1/models, /health and /metrics over an `OpenAIService`. Every error becomes OpenAI-style
// JSON with its status code; the server keeps running after each.
import Foundation
import Hummingbird
import Logging
import NIOCore

/// Builds the router and the application; `onRunning` receives the bound port (useful with
/// port 0) once the server listens.
public enum HTTPServer {
    public static func application(service: OpenAIService, host: String, port: Int,
                                   onRunning: @escaping @Sendable (Int) -> Void) -> some ApplicationProtocol {
        let router = Router(context: ConnectionContext.self)
        router.get("/health") { _, _ -> Response in
            let ready = service.isReady
            service.metrics.request(endpoint: "/health", status: ready ? 200 : 503)
            if let failure = service.failureMessage {
                let body = (try? JSONSerialization.data(withJSONObject: ["status": "failed", "error": failure])) ?? Data()
                return json(status: 503, body)
            }
            let body = ready ? #"{"status":"ok","ranks":\#(service.config.ranks)}"# : #"{"status":"loading"}"#
            return json(status: ready ? 200 : 503, Data(body.utf8))
        }
        router.get("/metrics") { _, _ -> Response in
            service.metrics.request(endpoint: "/metrics", status: 200)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: service.metrics.render())))
        }
        router.get("/v1/models") { request, _ -> Response in
            do {
                try service.authorize(request.headers[.authorization])
            } catch let error as APIError {
                service.metrics.request(endpoint: "/v1/models", status: error.status)
                return errorResponse(error)
            }
            service.metrics.request(endpoint: "/v1/models", status: 200)
            return json(status: 200, service.modelsJSON())
        }
        for endpoint in [Endpoint.chat, .completion] {
            router.post(RouterPath(endpoint.rawValue)) { request, context -> Response in
                let response = await handle(endpoint, request: request, channel: context.channel, service: service)
                service.metrics.request(endpoint: endpoint.rawValue, status: Int(response.status.code))
                return response
            }
        }
        var logger = Logger(label: "gemma-node.server")
        logger.logLevel = .warning
        return Application(router: router,
                           server: .http1(additionalChannelHandlers: [CloseWhenClientLeaves(), LingeringCloseAfterRefusal()]),
                           configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "gemma-node"),
                           onServerRunning: { channel in onRunning(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    static func json(status: Int, _ data: Data) -> Response {
        Response(status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// `closing`: the body was not read (a refusal before or while it arrived), so the
    /// connection ends after the answer (LingeringCloseAfterRefusal).
    static func errorResponse(_ error: APIError, closing: Bool = false) -> Response {
        var response = json(status: error.status, error.json)
        if closing { response.headers[.connection] = "close" }
        return response
    }

    /// One completion request: auth, body (size-limited), prepare, submit, then either the
    /// whole JSON or an SSE stream.
    static func handle(_ endpoint: Endpoint, request: Request, channel: any Channel, service: OpenAIService) async -> Response {
        let running: RunningRequest
        var bodyRead = false
        do {
            try service.authorize(request.headers[.authorization])
            let limit = service.config.maxBodyBytes
            if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
                throw APIError.tooLarge(limit: limit)
            }
            let body: ByteBuffer
            do {
                body = try await request.body.collect(upTo: limit)
            } catch is NIOTooManyBytesError {
                throw APIError.tooLarge(limit: limit)
            }
            bodyRead = true
            let (prepared, backend) = try service.prepare(endpoint, body: Data(body.readableBytesView))
            running = try service.start(prepared, backend: backend)
        } catch let error as APIError {
            return errorResponse(error, closing: !bodyRead)
        } catch {
            return errorResponse(.badRequest("\(error)"), closing: !bodyRead)
        }
        if !running.prepared.stream {
            defer { service.requestEnded() }
            // The client may leave before the answer is ready (nothing is written until then,
            // so no write fails): watch the connection and cancel the request when it closes,
            // which frees its KV slot on every rank.
            return await withTaskGroup(of: Response?.self) { group in
                group.addTask {
                    do {
                        return json(status: 200, try await service.completeJSON(running))
                    } catch let error as APIError {
                        return errorResponse(error)
                    } catch is CancellationError {
                        return nil
                    } catch {
                        return errorResponse(.internalError("\(error)"))
                    }
                }
                group.addTask {
                    while channel.isActive {
                        do { try await Task.sleep(nanoseconds: 50_000_000) } catch { return nil }  // cancelled: answered
                    }
                    return Response(status: .noContent)  // nobody is left to read it
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first ?? Response(status: .noContent)
            }
        }
        let body = ResponseBody { writer in
            defer { service.requestEnded() }
            try await service.streamEvents(running) { event in
                try await writer.write(ByteBuffer(string: event))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

/// The request context of the routes: Hummingbird's basic one plus the connection, so a
/// non-streaming completion can notice that its client has gone.
public struct ConnectionContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Closes a connection whose client closed its sending side. Hummingbird allows half-closed
/// connections, so without this a client that went away while its non-streaming answer was
/// being computed would leave the channel active and the request running; HTTP/1.1 clients
/// do not half-close while they still wait for an answer.
final class CloseWhenClientLeaves: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
