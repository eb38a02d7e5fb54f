"""HTTP endpoints of the tracking service."""

from aiohttp import web

routes = web.RouteTableDef()
