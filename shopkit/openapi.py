"""OpenAPI 3.1 built from the handlers themselves.

Each documented handler carries an `Operation`: who may call it, its pydantic models (body,
query, headers, answer), its status codes. `describe(app)` turns a router into a spec, so a
route and its description cannot drift apart silently; the gateway merges the services' specs
with its own (`merge`).
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import version
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

OPENAPI_PATH = "/openapi.json"
SPEC_KEY = web.AppKey("openapi_spec", dict)
SCHEMA_REF = "#/components/schemas/{model}"
_OPERATION_ATTR = "__openapi_operation__"
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

H = TypeVar("H", bound=Callable[..., Any])


class Access(StrEnum):
    """Who may call an operation through the gateway (contract §4)."""

    PUBLIC = "public"
    USER = "user"
    ADMIN = "admin"


class ErrorEnvelope(BaseModel):
    """Every failure, from every component (contract §3)."""

    model_config = ConfigDict(alias_generator=to_camel)

    success: Literal[False]
    error: str
    code: str
    request_id: str
    details: Any = None


# What each status means across the API; an operation names the ones it can answer.
STATUS_MEANINGS = {
    400: "The body is not valid JSON (`invalid_json`).",
    401: "A valid bearer token is required (`unauthorized`).",
    403: "The token is valid but its role may not do this (`forbidden`).",
    404: "No such resource, or not one of the caller's (`not_found`).",
    408: "The body did not arrive in time; the connection is closed (`request_timeout`).",
    409: "The request conflicts with the current state.",
    413: "The body is larger than 1 MiB (`payload_too_large`).",
    422: "A field, parameter or header is not valid; `details` names each (`validation_error`).",
    429: "Too many attempts, or too many of the caller's requests in flight; wait "
         "`Retry-After` seconds (`too_many_requests`).",
    503: "A dependency is down; retry after `Retry-After` seconds.",
    504: "An upstream service did not answer in time (`gateway_timeout`).",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}


@dataclass(frozen=True)
class Operation:
    summary: str
    access: Access
    answer: type[BaseModel] | None = None  # the `data` of the success envelope
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    errors: Mapping[int, str] = field(default_factory=dict)  # statuses beyond the usual ones
    media_type: str = "application/json"
    enveloped: bool = True  # False: `answer` is the whole body
    tag: str | None = None

    def error_statuses(self, has_path_params: bool) -> dict[int, str]:
        """The statuses every operation of its kind can answer, plus its own."""
        usual = {429, 503, 504}  # 429: a client's share of requests in flight (gateway)
        if self.access is not Access.PUBLIC:
            usual.add(401)
        if self.access is Access.ADMIN:
            usual.add(403)
        if has_path_params:
            usual.add(404)
        if self.body is not None:
            usual |= {400, 408, 413, 422}
        if self.query is not None or self.headers is not None:
            usual.add(422)
        statuses = {status: STATUS_MEANINGS[status] for status in usual}
        return {**statuses, **self.errors}


def documented(summary: str, access: Access, **details: Any) -> Callable[[H], H]:
    """Marks a handler with its Operation; put it below the route decorator."""
    operation = Operation(summary, access, **details)

    def mark(handler: H) -> H:
        setattr(handler, _OPERATION_ATTR, operation)
        return handler

    return mark


def operation_of(handler: Any) -> Operation | None:
    return getattr(handler, _OPERATION_ATTR, None)


def documented_routes(app: web.Application) -> list[tuple[str, str, Operation]]:
    """(method, path, operation) of every documented route of the app."""
    found = []
    for route in app.router.routes():
        operation = operation_of(route.handler)
        if operation is not None and route.method != "HEAD" and route.resource is not None:
            found.append((route.method, route.resource.canonical, operation))
    return found


def describe(app: web.Application, title: str, version: str = "1.0.0") -> dict[str, Any]:
    """The app's OpenAPI document, from its documented routes."""
    routes = documented_routes(app)
    refs, schemas = _schemas(op for _, _, op in routes)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, operation, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token from POST /api/users/login (or /api/admin/login). "
                    "Operations marked `x-access: admin` also need the admin role.",
                }
            },
        },
    }


def describe_at_startup(app: web.Application, title: str) -> None:
    """The app's spec in `app[SPEC_KEY]`, built once its routes are final."""

    async def build(app: web.Application) -> None:
        app[SPEC_KEY] = describe(app, title, version("shop"))

    app.on_startup.append(build)


def serve_description(app: web.Application, title: str) -> None:
    """`GET /openapi.json`: the app's own spec."""
    describe_at_startup(app, title)

    async def spec(request: web.Request) -> web.Response:
        return web.json_response(request.app[SPEC_KEY])

    app.router.add_get(OPENAPI_PATH, spec)


Pair = tuple[type[BaseModel], JsonSchemaMode]


def _schemas(operations: Iterable[Operation]) -> tuple[dict[Pair, dict], dict[str, Any]]:
    pairs: set[Pair] = {(ErrorEnvelope, "serialization")}
    for op in operations:
        pairs |= {(model, "validation") for model in (op.body, op.query, op.headers) if model}
        if op.answer is not None:
            pairs.add((op.answer, "serialization"))
    refs, top = models_json_schema(
        sorted(pairs, key=lambda pair: (pair[0].__name__, pair[1])),
        ref_template=SCHEMA_REF,
        by_alias=True,
    )
    return dict(refs), top.get("$defs", {})


def _operation(
    method: str, path: str, op: Operation, refs: Mapping[Pair, dict]
) -> dict[str, Any]:
    path_params = _PATH_PARAM.findall(path)
    described: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_')}",
        "security": [] if op.access is Access.PUBLIC else [{"bearerAuth": []}],
        "x-access": op.access.value,
        "parameters": [
            *(
                {"name": name, "in": "path", "required": True,
                 "schema": {"type": "string", "format": "uuid"}}
                for name in path_params
            ),
            *_model_parameters(op.query, "query"),
            *_model_parameters(op.headers, "header"),
        ],
        "responses": _responses(op, refs, bool(path_params)),
    }
    if op.tag:
        described["tags"] = [op.tag]
    if op.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return described


def _model_parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    """One parameter per field of the model."""
    if model is None:
        return []
    schema = model.model_json_schema(by_alias=True, ref_template=SCHEMA_REF)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": where, "required": name in required, "schema": _never_null(prop)}
        for name, prop in schema["properties"].items()
    ]


def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query or header value is absent or a string, never JSON null: an optional
    `X | None` field is documented as X."""
    options = [o for o in schema.get("anyOf", ()) if o != {"type": "null"}]
    if len(options) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**options[0], **rest}


def _responses(op: Operation, refs: Mapping[Pair, dict], has_path_params: bool) -> dict:
    error = {"application/json": {"schema": refs[(ErrorEnvelope, "serialization")]}}
    responses: dict[str, Any] = {
        str(op.status): {"description": "Success.", "content": {op.media_type: _success(op, refs)}}
    }
    for status, meaning in sorted(op.error_statuses(has_path_params).items()):
        responses[str(status)] = {"description": meaning, "content": error}
        if status in (429, 503):
            responses[str(status)]["headers"] = _RETRY_AFTER
    return responses


def _success(op: Operation, refs: Mapping[Pair, dict]) -> dict[str, Any]:
    if op.answer is None:
        return {"schema": {"type": "object" if op.media_type == "application/json" else "string"}}
    data = refs[(op.answer, "serialization")]
    if not op.enveloped:
        return {"schema": data}
    return {
        "schema": {
            "type": "object",
            "required": ["success", "data"],
            "properties": {"success": {"const": True}, "data": data},
        }
    }


def merge(own: dict[str, Any], others: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The gateway's spec plus each service's public (`/api/...`) paths. A schema name two
    services use for different shapes is renamed `<service>.<name>` in that service's part."""
    merged = {**own, "paths": dict(own["paths"])}
    schemas = merged["components"]["schemas"] = dict(own["components"]["schemas"])
    for service, spec in others.items():
        renamed = {
            name: f"{service}.{name}"
            for name, schema in spec.get("components", {}).get("schemas", {}).items()
            if name in schemas and schemas[name] != schema
        }
        part = _rename_refs(spec, renamed)
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            schemas[renamed.get(name, name)] = schema
        for path, item in part["paths"].items():
            if path.startswith("/api/"):
                merged["paths"][path] = {**merged["paths"].get(path, {}), **item}
    return merged


def _rename_refs(node: Any, renamed: Mapping[str, str]) -> Any:
    if not renamed:
        return node
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name in renamed:
                return {**node, "$ref": f"#/components/schemas/{renamed[name]}"}
        return {key: _rename_refs(value, renamed) for key, value in node.items()}
    if isinstance(node, list):
        return [_rename_refs(item, renamed) for item in node]
    return node
