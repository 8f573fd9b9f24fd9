"""The live stream: window results as Server-Sent Events (``text/event-stream``).

One ``EventStream`` response per browser. It subscribes to the ``LiveBroadcaster`` (results are
queued by the engine thread, boundedly, and an asyncio event wakes this coroutine through
``call_soon_threadsafe``), and writes::

    retry: 2000                      reconnect delay for EventSource
    event: hello                     what was subscribed
    event: result                    one window result (provisional or final), as in /api/v1/report
    event: dropped                   {"dropped": N}: results lost because this client was too slow
    : keepalive 2026-...Z            a comment every heartbeat interval

It listens for the client's disconnect while waiting, unsubscribes at once, and ends when the
broadcaster closes (server shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from flowscope.aggregate.engine import WindowResult
from flowscope.serve.params import iso
from flowscope.serve.sinks import LiveBroadcaster, wall_clock_ms

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dumps(data: Any) -> str:
    """Compact JSON that is also safe to embed in HTML: <, > and & are escaped."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def with_times(result: dict[str, Any]) -> dict[str, Any]:
    """A window result with ISO texts next to its millisecond times."""
    ordered = {"interval": result["interval"], "view": result["view"], "start_ms": result["start_ms"],
               "start": iso(result["start_ms"]), "end_ms": result["end_ms"], "end": iso(result["end_ms"]),
               "final": result["final"]}
    ordered.update((k, v) for k, v in result.items() if k not in ordered)
    return ordered


def series_point(result: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a result for charts: totals, protocol split, web totals."""
    totals = result.get("totals", {})
    web = result.get("web", {})
    return {
        "start_ms": result["start_ms"], "start": iso(result["start_ms"]), "end_ms": result["end_ms"],
        "final": result["final"],
        "flows": totals.get("flows", 0), "packets": totals.get("packets", 0), "bytes": totals.get("bytes", 0),
        "by_protocol": totals.get("by_protocol", {}),
        "web": {"flows": web.get("flows", 0), "packets": web.get("packets", 0), "bytes": web.get("bytes", 0)},
        "late_flows": result.get("late_flows", 0),
    }


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {dumps(data)}\n\n"


class EventStream(Response):
    """A Server-Sent Events response fed by a ``LiveBroadcaster`` subscription."""

    media_type = "text/event-stream"

    def __init__(
        self, broadcaster: LiveBroadcaster, intervals: tuple[str, ...], view: str, *, final_only: bool = False,
        compact: bool = False, heartbeat_ms: int = 15_000, retry_ms: int = 2_000,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        # No Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)
        self.broadcaster = broadcaster
        self.intervals = intervals
        self.view = view
        self.final_only = final_only
        self.compact = compact
        self.heartbeat_s = heartbeat_ms / 1000
        self.retry_ms = retry_ms
        self.clock_ms = clock_ms

    def _render(self, result: WindowResult) -> str:
        data = result.to_json()
        if self.compact:
            return event("result", {"interval": result.resolution, "view": result.view, **series_point(data)})
        return event("result", with_times(data))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        subscription = self.broadcaster.subscribe(
            self.intervals, self.view, final_only=self.final_only,
            notify=lambda: loop.call_soon_threadsafe(wake.set),
        )
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    wake.set()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            hello = {"intervals": list(self.intervals), "view": self.view, "final_only": self.final_only,
                     "compact": self.compact, "heartbeat_ms": int(self.heartbeat_s * 1000)}
            await self._send(send, f"retry: {self.retry_ms}\n\n" + event("hello", hello))
            while not gone.is_set():
                wake.clear()
                results, dropped = subscription.take()
                if dropped:
                    await self._send(send, event("dropped", {"dropped": dropped}))
                if results:
                    await self._send(send, "".join(self._render(r) for r in results))
                    continue
                if subscription.closed:
                    break
                try:
                    await asyncio.wait_for(wake.wait(), timeout=self.heartbeat_s)
                except TimeoutError:
                    await self._send(send, f": keepalive {iso(self.clock_ms())}\n\n")
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the connection broke while writing
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            self.broadcaster.unsubscribe(subscription)

    @staticmethod
    async def _send(send: Send, text: str) -> None:
        await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
