"""The HTTP server's own refusals in the contract's envelope: the one place the shop reaches
into aiohttp's internals.

aiohttp's parser refuses a request before any middleware sees it: a malformed request line,
a header line over 8 KiB, more than 128 headers, a NUL in a header. aiohttp would answer
those in plain text, and offers no public way to answer them otherwise; here they get the same
JSON envelope as every other error. It takes two internals of aiohttp (AppRunner._make_server
and the Server's making of its RequestHandler), so tests/unit/test_server_adapter.py checks
both, and what they give, on every aiohttp the project installs: an upgrade that changes
them fails there by name, not somewhere in the system.
"""

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shopkit import errors
from shopkit.web import error_response, sane_request_id


class MalformedRequest(errors.ApiError):
    status, code = 400, "bad_request"
    message = "The request could not be read: malformed, or a header over the size limits."


class EnvelopeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The parent logs the failure, and refuses if a response has already begun.
        super().handle_error(request, status, exc, message)
        error = MalformedRequest() if 400 <= status < 500 else errors.ApiError()
        error.status = status
        response = error_response(error, sane_request_id(None))
        response.force_close()
        return response


class EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class EnvelopeAppRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors in the envelope."""

    async def _make_server(self) -> web.Server:
        server: Any = await super()._make_server()
        # The app builds its own Server; only the connection handler it makes differs.
        server.__class__ = EnvelopeServer
        return server
