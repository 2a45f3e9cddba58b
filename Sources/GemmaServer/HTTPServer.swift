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
        let router = Router()
        router.get("/health") { _, _ -> Response in
            let ready = service.isReady
            service.metrics.request(endpoint: "/health", status: ready ? 200 : 503)
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
            router.post(RouterPath(endpoint.rawValue)) { request, _ -> Response in
                let response = await handle(endpoint, request: request, service: service)
                service.metrics.request(endpoint: endpoint.rawValue, status: Int(response.status.code))
                return response
            }
        }
        var logger = Logger(label: "gemma-node.server")
        logger.logLevel = .warning
        return Application(router: router,
                           configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "gemma-node"),
                           onServerRunning: { channel in onRunning(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    static func json(status: Int, _ data: Data) -> Response {
        Response(status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func errorResponse(_ error: APIError) -> Response { json(status: error.status, error.json) }

    /// One completion request: auth, body (size-limited), prepare, submit, then either the
    /// whole JSON or an SSE stream.
    static func handle(_ endpoint: Endpoint, request: Request, service: OpenAIService) async -> Response {
        let running: RunningRequest
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
            let (prepared, backend) = try service.prepare(endpoint, body: Data(body.readableBytesView))
            running = try service.start(prepared, backend: backend)
        } catch let error as APIError {
            return errorResponse(error)
        } catch {
            return errorResponse(.badRequest("\(error)"))
        }
        if !running.prepared.stream {
            do {
                return json(status: 200, try await service.completeJSON(running))
            } catch let error as APIError {
                return errorResponse(error)
            } catch {
                return errorResponse(.internalError("\(error)"))
            }
        }
        let body = ResponseBody { writer in
            try await service.streamEvents(running) { event in
                try await writer.write(ByteBuffer(string: event))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}
