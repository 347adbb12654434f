"""Streamed answers (the event stream, a journal, a wait): how one starts, and how the endless
ones end.

A handler that streams until its client leaves runs inside `endless(request)`; the application's
`on_shutdown` cancels those, since they never end by themselves and aiohttp would otherwise wait
its whole shutdown timeout for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from aiohttp import web

__all__ = ["endless", "on_shutdown", "stream_response"]

# the open streams of each application: they end when it shuts down (not after aiohttp's grace)
_streams: weakref.WeakKeyDictionary[web.Application, set[asyncio.Task[Any]]] = (
    weakref.WeakKeyDictionary()
)


async def stream_response(request: web.Request, content_type: str) -> web.StreamResponse:
    """A 200 whose body is written as it comes (chunked), already sent its headers."""
    resp = web.StreamResponse(status=200)
    resp.content_type = content_type
    resp.charset = "utf-8"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp


@contextlib.contextmanager
def endless(request: web.Request) -> Iterator[None]:
    """Within it, the handler of `request` streams until its client leaves (the event stream, a
    followed journal): its application's shutdown cancels it (see `on_shutdown`)."""
    task = asyncio.current_task()
    streams = _streams.setdefault(request.app, set())
    if task is not None:
        streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)  # type: ignore[arg-type]


async def on_shutdown(app: web.Application) -> None:
    """End the application's endless streams (`app.on_shutdown`): they never end by themselves,
    and aiohttp would otherwise wait its whole shutdown timeout for it."""
    for task in list(_streams.get(app, ())):
        task.cancel()
