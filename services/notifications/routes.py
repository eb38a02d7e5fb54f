"""HTTP endpoints of the notifications service."""

from aiohttp import web

routes = web.RouteTableDef()
