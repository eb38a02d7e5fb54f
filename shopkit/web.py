"""HTTP plumbing shared by every component: request ids, the error envelope, JSON in and out."""

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from shopkit import errors, tracing
from shopkit.logs import request_id_var
from shopkit.metrics import request_metrics

log = logging.getLogger("shopkit.http")
access_log = logging.getLogger("shopkit.access")

REQUEST_ID_HEADER = "X-Request-Id"
MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_KEY = web.RequestKey("request_id", str)
BODY_READ_TIMEOUT_KEY = web.AppKey("body_read_timeout", float)
# What every response says of the server: its name only, never its software or version.
SERVER_HEADER = "shop"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)


def api_name(field: str) -> str:
    """A field's name on the wire: `unit_price_cents` is `unitPriceCents`."""
    return to_camel(field)


class ApiModel(BaseModel):
    """A request or response body: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=api_name, populate_by_name=True)


def from_row(model: type[Model], row: Mapping[str, Any], **given: Any) -> Model:
    """The model of a row: each field from the column of its name, but those `given`."""
    return model(**{name: row[name] for name in model.model_fields if name not in given}, **given)


def path_id(request: web.Request, name: str) -> uuid.UUID:
    """The UUID in the path; a malformed one names nothing that exists, so it is 404 too."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError as exc:
        raise errors.NotFound() from exc


# A fresh request id is this process's random prefix and a count, 32 hex digits as a uuid4's:
# unique across instances without asking the kernel for randomness on every request. Request
# ids are echoed to clients and are no secret.
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_count = itertools.count()


def sane_request_id(candidate: str | None) -> str:
    """The client's request id when it is a sane token, a fresh one otherwise."""
    if candidate and _SANE_REQUEST_ID.match(candidate):
        return candidate
    return f"{_REQUEST_ID_PREFIX}{next(_request_count) % 2**64:016x}"


def request_id(request: web.Request) -> str:
    return request.get(REQUEST_ID_KEY) or "unknown"


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_encode_model)


def _encode_model(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"cannot encode {type(value).__name__}")


def ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=dumps({"success": True, "data": data}),
        status=status,
        content_type="application/json",
    )


def error_response(error: errors.ApiError, request_id_value: str) -> web.Response:
    response = web.Response(
        body=dumps(errors.error_body(error, request_id_value)),
        status=error.status,
        content_type="application/json",
        headers=error.headers,
    )
    # Also for refusals that no app's signals see (shopkit.server).
    response.headers["Server"] = SERVER_HEADER
    if error.closes_connection:
        response.force_close()
    return response


async def conceal_software(_request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` signal: aiohttp would name itself and Python's version."""
    response.headers["Server"] = SERVER_HEADER


async def read_body(request: web.Request) -> bytes:
    """The body: 413 past the size limit, 400 when it cannot be read (e.g. a corrupt gzip),
    408 when it does not arrive within the app's body read timeout (the connection is closed:
    what is left of the body would still be on its way)."""
    if not request.body_exists:
        return b""
    try:
        if request.content.is_eof():  # all of it came with the headers: nothing to wait for
            return await request.read()
        async with asyncio.timeout(request.config_dict[BODY_READ_TIMEOUT_KEY]):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise errors.PayloadTooLarge() from exc
    except web.RequestPayloadError as exc:
        raise errors.InvalidJson("The request body could not be read.") from exc
    except TimeoutError as exc:
        raise errors.RequestTimeout() from exc


async def read_json(request: web.Request) -> Any:
    try:
        body = orjson.loads(await read_body(request))
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidJson() from exc
    if (where := _nul_at(body)) is not None:
        # Postgres text cannot hold NUL: refuse it here, by field, not as a database error.
        raise errors.ValidationFailed(
            details=[{"field": where or "body", "message": "must not contain NUL characters"}]
        )
    return body


def _nul_at(value: Any) -> str | None:
    """The path of a string (or key) holding a NUL character, None when there is none.
    Iterative, so no nesting depth orjson accepts can exhaust Python's stack."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return path
        children = item.items() if isinstance(item, dict) else (
            enumerate(item) if isinstance(item, list) else ()
        )
        for key, child in children:
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return inner
            pending.append((inner, child))
    return None


def read_query(request: web.Request, model: type[Model]) -> Model:
    """The query string as `model` documents it (shopkit.openapi): 422 naming each bad
    parameter. A parameter given twice counts once, its first value."""
    return validate(model, {name: request.query[name] for name in request.query})


def read_headers(request: web.Request, model: type[Model]) -> Model:
    """The headers `model` documents (each field's alias is the header's name), as it reads
    them: 422 naming each bad one."""
    names = [field.alias or name for name, field in model.model_fields.items()]
    return validate(model, {name: request.headers.get(name) for name in names})


async def read_model(request: web.Request, model: type[Model]) -> Model:
    """The body parsed and validated: 400 when it is not JSON, 422 naming each bad field."""
    return validate(model, await read_json(request))


def validate(model: type[Model], data: Any) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.ValidationFailed(details=validation_details(exc)) from exc


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(part) for part in item["loc"]) or "body", "message": item["msg"]}
        for item in exc.errors(include_url=False)
    ]


# The access log is for following a client's requests: one line per request, written where
# the request enters the shop (the gateway), whose line carries the request id every service's
# own lines for it carry too. A service writes its access lines only at DEBUG, so a request does
# not cost a formatted line in every process it crosses (docs/performance.md).
EDGE_ACCESS_LEVEL = logging.INFO
INNER_ACCESS_LEVEL = logging.DEBUG


def request_context(access_level: int) -> Middleware:
    """Gives the request its id (for logs, upstream calls and events) and logs its outcome
    at `access_level`."""

    @web.middleware
    async def request_context_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        rid = sane_request_id(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID_KEY] = rid
        tracing.note_request_id(rid)
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = rid
            return response
        finally:
            if access_log.isEnabledFor(access_level):
                access_log.log(access_level, "request", extra={
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                })
            request_id_var.reset(token)

    return request_context_middleware


_HTTP_EXCEPTIONS: dict[int, type[errors.ApiError]] = {
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
}


def error_middleware(is_unavailable: Callable[[Exception], bool]) -> Middleware:
    """Every failure leaves as the contract's envelope; nothing internal reaches the client.

    `is_unavailable` tells a dependency that cannot serve right now (503) from a bug (500).
    It is passed in, not imported, so a component without a database (the gateway) does not
    load the database driver only to recognise its errors: that is 10 MiB of resident memory.
    """

    @web.middleware
    async def errors_as_envelopes(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as exc:
            return error_response(exc, request_id(request))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(_http_error(exc), request_id(request))
        except Exception as exc:
            return error_response(_unexpected(exc, is_unavailable), request_id(request))

    return errors_as_envelopes


def _http_error(exc: web.HTTPException) -> errors.ApiError:
    known = _HTTP_EXCEPTIONS.get(exc.status)
    api_error = known() if known else errors.ApiError(exc.reason, code="http_error")
    api_error.status = exc.status
    if "Allow" in exc.headers:
        api_error.headers["Allow"] = exc.headers["Allow"]
    return api_error


def _unexpected(exc: Exception, is_unavailable: Callable[[Exception], bool]) -> errors.ApiError:
    """A failure no handler expected: 503 when a dependency cannot serve, 500 otherwise.
    Either way the client learns nothing of its insides (no trace, no SQL)."""
    if is_unavailable(exc):
        log.warning("dependency unavailable: %s", type(exc).__name__)
        return errors.DatabaseUnavailable()
    log.exception("unhandled error")
    return errors.ApiError()


def _never(_exc: Exception) -> bool:
    return False


def base_middlewares(
    component: str,
    is_unavailable: Callable[[Exception], bool] = _never,
    access_level: int = INNER_ACCESS_LEVEL,
) -> list[Middleware]:
    """Request id and access log, then metrics (seeing the final status), then errors."""
    return [request_context(access_level), request_metrics(component),
            error_middleware(is_unavailable)]


def component_app(
    middlewares: list[Middleware], body_read_timeout_seconds: float
) -> web.Application:
    """The application every component serves its API with: bodies up to MAX_BODY_BYTES,
    read within the timeout, and responses that do not name the server's software."""
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[BODY_READ_TIMEOUT_KEY] = body_read_timeout_seconds
    app.on_response_prepare.append(conceal_software)
    return app
