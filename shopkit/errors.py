"""The contract's error envelope: raised as exceptions anywhere, rendered by one middleware."""

from typing import Any


class ApiError(Exception):
    """An error a client may see: status, snake_case code, a message for a person."""

    status = 500
    code = "internal_error"
    message = "Something went wrong on our side."
    # The connection cannot serve another request after this one (its input is not whole).
    closes_connection = False

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)

    def with_details(self, details: Any) -> "ApiError":
        self.details = details
        return self


class InvalidJson(ApiError):
    status, code, message = 400, "invalid_json", "The request body is not valid JSON."


class Unauthorized(ApiError):
    status, code, message = 401, "unauthorized", "A valid bearer token is required."


class InvalidCredentials(ApiError):
    status, code, message = 401, "invalid_credentials", "Wrong email or password."


class Forbidden(ApiError):
    status, code, message = 403, "forbidden", "You are not allowed to do this."


class NotFound(ApiError):
    status, code, message = 404, "not_found", "Not found."


class MethodNotAllowed(ApiError):
    status, code, message = 405, "method_not_allowed", "This method is not allowed here."


class Conflict(ApiError):
    status, code, message = 409, "conflict", "The request conflicts with the current state."


class RequestTimeout(ApiError):
    status, code, message = 408, "request_timeout", "The request body did not arrive in time."
    closes_connection = True


class PayloadTooLarge(ApiError):
    status, code, message = 413, "payload_too_large", "The request body is larger than 1 MiB."


class ValidationFailed(ApiError):
    status, code, message = 422, "validation_error", "The request is not valid."


class TooManyRequests(ApiError):
    status, code, message = 429, "too_many_requests", "Too many attempts; try again later."

    def __init__(
        self, retry_after_seconds: int, message: str | None = None, *, code: str | None = None
    ) -> None:
        super().__init__(
            message, code=code, headers={"Retry-After": str(max(1, retry_after_seconds))}
        )


class ServiceUnavailable(ApiError):
    status, code, message = 503, "service_unavailable", "A service we depend on is unavailable."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": "5"})


class DatabaseUnavailable(ServiceUnavailable):
    code, message = "database_unavailable", "The database is unavailable; try again shortly."


class GatewayTimeout(ApiError):
    status, code, message = 504, "gateway_timeout", "An upstream service did not answer in time."


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "success": False,
        "error": error.message,
        "code": error.code,
        "requestId": request_id,
    }
    if error.details is not None:
        body["details"] = error.details
    return body
