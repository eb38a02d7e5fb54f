"""shopkit.server is an adapter to aiohttp's internals (answering the parser's refusals in the
envelope has no public way). These tests fail by name when an aiohttp upgrade changes what it
relies on; then shopkit/server.py is the one file to mend."""

import asyncio
import inspect

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from shopkit.server import EnvelopeAppRunner, EnvelopeRequestHandler


def test_the_aiohttp_internals_it_takes_are_there() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server), "AppRunner._make_server"
    parameters = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert parameters[:5] == ["self", "request", "status", "exc", "message"], parameters
    assert issubclass(EnvelopeRequestHandler, RequestHandler)


async def test_a_request_the_parser_refuses_is_answered_in_the_envelope() -> None:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = EnvelopeAppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
    finally:
        await runner.cleanup()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 400 " in head.split(b"\r\n")[0]
    envelope = orjson.loads(body)
    assert envelope["success"] is False and envelope["code"] == "bad_request"
    assert envelope["requestId"]
