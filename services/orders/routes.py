"""HTTP endpoints of the orders service."""

from aiohttp import web

routes = web.RouteTableDef()
