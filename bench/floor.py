"""The floor: the least a Python aiohttp proxy can do. No auth, no logging, no features.

Usage: python bench/floor.py --port 8001 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from yarl import URL

# Hop-by-hop fields plus the ones aiohttp sets again itself.
DROPPED = frozenset(
    {"connection", "keep-alive", "proxy-authorization", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "host", "content-length"}
)
SESSION = web.AppKey("session", aiohttp.ClientSession)
ORIGIN = web.AppKey("origin", str)


async def forward(request: web.Request) -> web.Response:
    """Send the request upstream as it came; answer with upstream's status, body and type."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
    body = await request.read()
    url = URL(request.app[ORIGIN] + request.raw_path, encoded=True)
    async with request.app[SESSION].request(
        request.method, url, headers=headers, data=body or None, allow_redirects=False
    ) as up:
        payload = await up.read()
        content_type = up.headers.get("Content-Type", "application/octet-stream")
        return web.Response(status=up.status, body=payload, headers={"Content-Type": content_type})


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    """One pooled keep-alive session for the life of the app (same pool size as Tollgate)."""
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[SESSION] = session
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[ORIGIN] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
