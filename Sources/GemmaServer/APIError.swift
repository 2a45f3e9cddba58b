// Errors the HTTP API returns, each with the status code and OpenAI's error JSON shape so the
// official clients raise their usual exception types (BadRequestError, AuthenticationError, ...).
import Foundation

/// An error answered to the client; the server stays up after every one.
public struct APIError: Error, CustomStringConvertible, Sendable, Equatable {
    public var status: Int
    public var type: String
    public var code: String?
    public var param: String?
    public var message: String

    public var description: String { "\(status) \(type): \(message)" }

    public static func badRequest(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, type: "invalid_request_error", code: code, param: param, message: message)
    }

    public static let unauthorized = APIError(status: 401, type: "invalid_request_error", code: "invalid_api_key", param: nil,
                                              message: "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'")

    public static func tooLarge(limit: Int) -> APIError {
        APIError(status: 413, type: "invalid_request_error", code: "request_too_large", param: nil,
                 message: "Request body is larger than the limit of \(limit) bytes")
    }

    /// The prompt plus the completion budget do not fit the context (OpenAI's wording).
    public static func contextOverflow(prompt: Int, completion: Int, context: Int) -> APIError {
        // The total is printed as a wider sum: max_tokens may be near Int.max.
        let total = Int64(prompt).addingReportingOverflow(Int64(completion))
        let requested = total.overflow ? "\(UInt64(prompt) + UInt64(completion))" : "\(total.partialValue)"
        return APIError(status: 400, type: "invalid_request_error", code: "context_length_exceeded", param: "messages",
                 message: "This model's maximum context length is \(context) tokens. However, you requested \(requested) tokens "
                    + "(\(prompt) in the prompt, \(completion) for the completion). Please reduce the prompt or max_tokens.")
    }

    public static func busy(_ message: String) -> APIError {
        APIError(status: 429, type: "server_busy", code: "queue_full", param: nil, message: message)
    }

    public static func unavailable(_ message: String) -> APIError {
        APIError(status: 503, type: "server_unavailable", code: nil, param: nil, message: message)
    }

    public static func notFound(_ message: String) -> APIError {
        APIError(status: 404, type: "invalid_request_error", code: "not_found", param: nil, message: message)
    }

    public static func internalError(_ message: String) -> APIError {
        APIError(status: 500, type: "server_error", code: nil, param: nil, message: message)
    }

    /// The JSON body.
    public var json: Data {
        let body = APIErrorBody(error: .init(message: message, type: type, param: param, code: code))
        return (try? JSONEncoder().encode(body)) ?? Data(#"{"error":{"message":"error","type":"server_error"}}"#.utf8)
    }
}
