"""The ASGI application: JSON API under /api/v1, live stream, /metrics, the dashboard pages.

Every endpoint is declared once in ``ENDPOINTS`` (path, parameters, answers); the declaration
validates requests, routes them and writes the OpenAPI document. Handlers are plain functions
``(Dashboard, Args) -> Response``; those that read the store or the engine run in the thread
pool, so the event loop (and the live streams on it) never waits for SQLite. A bad parameter is
a 400 whose JSON names it; anything unexpected is logged and answered as a JSON 500 (a bug: the
tests hit every endpoint with bad input to keep it from happening).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles

from flowscope import __version__
from flowscope.aggregate.stats import METRICS
from flowscope.errors import ConfigError
from flowscope.serve import downloads, prometheus
from flowscope.serve.auth import SecurityHeaders, TokenAuth
from flowscope.serve.dashboard import Dashboard
from flowscope.serve.exporters import exporter_health
from flowscope.serve.openapi import CSV, EVENTS, JSON, TEXT, Endpoint, document
from flowscope.serve.params import (
    BY,
    DOWNLOAD,
    FINAL,
    FINEST,
    FORMAT,
    FROM,
    TIME,
    TO,
    VIEW,
    ApiError,
    Args,
    Param,
    bad_parameter,
    canonical_address,
    interval_param,
    iso,
    limit_param,
    parse_args,
)
from flowscope.serve.stream import EventStream, dumps, series_point, with_times

log = logging.getLogger(__name__)
API = "/api/v1"
MAX_BODY_BYTES = 64 * 1024


# ----------------------------------------------------------------------------- responses


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    merged = {"Cache-Control": "no-store", **(headers or {})}
    return Response(dumps(data), status_code=status, media_type=JSON, headers=merged)


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    return json_response(error.body(), error.status, headers)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


# ------------------------------------------------------------------------------- helpers


def _range(args: Args) -> tuple[int | None, int | None]:
    start, end = args.time("from"), args.time("to")
    if start is not None and end is not None and start > end:
        raise bad_parameter("to", f"{iso(end)} is before from ({iso(start)})")
    return start, end


def _window_row(d: Dashboard, args: Args) -> dict[str, Any]:
    """The result of the window holding ``time`` (default: the newest), or a 404."""
    interval, view, at, final = args.text("interval"), args.text("view"), args.time("time"), args.flag("final")
    if at is None:
        row = d.store.latest(interval, view=view, final_only=final)
        where = "yet"
    else:
        start = d.catalog.resolution(interval).start_of(at)
        row = d.store.at(interval, start, view=view)
        if row is not None and final and not row["final"]:
            row = None
        where = f"for the window starting {iso(start)}"
    if row is None:
        kind = "final " if final else ""
        raise not_found(f"no {kind}{interval} result for view {view!r} {where}")
    return with_times(row)


def _window_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("interval", "view", "start_ms", "start", "end_ms", "end", "final")}


def _download_headers(args: Args, kind: str, row_start: int | None, extension: str, always: bool) -> dict[str, str]:
    if not (always or args.flag("download")):
        return {}
    name = downloads.filename(kind, args.text("interval"), args.text("view"), row_start, extension)
    return downloads.attachment(name)


# ------------------------------------------------------------------------------ handlers


def health(d: Dashboard, args: Args) -> Response:
    now = d.clock_ms()
    return json_response({"status": "ok", "version": __version__, "time_ms": now, "time": iso(now),
                          "started_ms": d.started_ms, "started": iso(d.started_ms),
                          "uptime_ms": max(0, now - d.started_ms), "subscribers": d.broadcaster.subscribers})


def version(d: Dashboard, args: Args) -> Response:
    return json_response({"version": __version__, "api": "v1"})


def _views(d: Dashboard) -> list[dict[str, Any]]:
    return [{"name": "all", "filter": None},
            *({"name": v.name, "filter": v.filter} for v in d.engine.config.stats.views)]


def config(d: Dashboard, args: Args) -> Response:
    engine = d.engine.config
    spec = engine.stats
    catalog = d.catalog
    return json_response({
        "version": __version__,
        "intervals": [{"name": r.name, "duration_ms": r.duration_ms,
                       "retention_ms": d.store.config.retention_for(r.name)} for r in catalog.resolutions],
        "live_interval": catalog.finest,
        "report_interval": catalog.report,
        "views": _views(d),
        "top_n": spec.top_n,
        "port_side": spec.port_side,
        "web": {"tcp_ports": list(spec.web.tcp_ports), "udp_ports": list(spec.web.udp_ports)},
        "local_networks": list(spec.local_networks),
        "watched_hosts": d.hosts.watched(),
        "time_base": engine.time_base,
        "grace_ms": engine.grace_ms,
        "provisional_interval_ms": engine.provisional_interval_ms,
        "auth": bool(d.token),
        "stream": {"heartbeat_ms": d.heartbeat_ms, "queue_events": d.broadcaster.max_queued},
    })


def views(d: Dashboard, args: Args) -> Response:
    return json_response({"views": _views(d)})


def results(d: Dashboard, args: Args) -> Response:
    interval, view = args.text("interval"), args.text("view")
    start, end = _range(args)
    rows = [with_times(row) for row in d.store.query(interval, view=view, start_ms=start, end_ms=end,
                                                     final_only=args.flag("final"), limit=args.integer("limit"))]
    if args.text("format") == "csv":
        headers = _download_headers(args, "results", rows[0]["start_ms"] if rows else start, "csv", always=True)
        return Response(downloads.range_csv(rows), media_type=f"{CSV}; charset=utf-8", headers=headers)
    body = {"interval": interval, "view": view, "from_ms": start, "to_ms": end, "count": len(rows), "results": rows}
    return json_response(body, headers=_download_headers(args, "results", rows[0]["start_ms"] if rows else start,
                                                          "json", always=False))


def latest(d: Dashboard, args: Args) -> Response:
    return json_response(_window_row(d, args))


def report(d: Dashboard, args: Args) -> Response:
    row = _window_row(d, args)
    if args.text("format") == "csv":
        headers = _download_headers(args, "report", row["start_ms"], "csv", always=True)
        return Response(downloads.report_csv(row), media_type=f"{CSV}; charset=utf-8", headers=headers)
    return json_response(row, headers=_download_headers(args, "report", row["start_ms"], "json", always=False))


def series(d: Dashboard, args: Args) -> Response:
    interval, view = args.text("interval"), args.text("view")
    start, end = _range(args)
    limit = args.integer("limit")
    rows = d.store.query(interval, view=view, start_ms=start, end_ms=end, final_only=args.flag("final"), limit=limit)
    points = [series_point(row) for row in rows]
    if args.flag("fill"):
        points = _fill(d, interval, points, start, end, limit)
    if args.text("format") == "csv":
        headers = _download_headers(args, "series", points[0]["start_ms"] if points else start, "csv", always=True)
        return Response(downloads.series_csv(interval, view, points), media_type=f"{CSV}; charset=utf-8",
                        headers=headers)
    body = {"interval": interval, "view": view, "from_ms": start, "to_ms": end, "count": len(points),
            "points": points}
    return json_response(body)


def _fill(d: Dashboard, interval: str, points: list[dict[str, Any]], start: int | None, end: int | None,
          limit: int) -> list[dict[str, Any]]:
    """Zero points for the windows of the range that have no stored result (no traffic)."""
    resolution = d.catalog.resolution(interval)
    duration = resolution.duration_ms
    now = d.clock_ms()
    first = resolution.start_of(start) if start is not None else (points[0]["start_ms"] if points else None)
    last = end if end is not None else (now if start is not None else (points[-1]["end_ms"] if points else None))
    if first is None or last is None:
        return points
    last = min(last, now + duration)
    starts = range(first if first % duration == 0 else first + duration - first % duration, last, duration)
    if len(starts) > limit:
        starts = starts[len(starts) - limit:]
    known = {p["start_ms"]: p for p in points}
    grace = d.engine.config.grace_ms
    zero = {"flows": 0, "packets": 0, "bytes": 0}
    filled = []
    for window in starts:
        point = known.get(window)
        if point is None:
            point = {"start_ms": window, "start": iso(window), "end_ms": window + duration,
                     "final": window + duration + grace <= now, **zero,
                     "by_protocol": {p: dict(zero) for p in ("tcp", "udp", "icmp", "other")}, "web": dict(zero),
                     "late_flows": 0, "filled": True}
        filled.append(point)
    return filled


def top_ports(d: Dashboard, args: Args) -> Response:
    row = _window_row(d, args)
    by, n, protocol = args.text("by"), args.integer("n"), args.text("protocol")
    body = {**_window_fields(row), "by": by}
    for name in ("tcp", "udp"):
        if protocol in (name, "both"):
            body[name] = row["top_ports"][name][by][:n]
    return json_response(body)


def web(d: Dashboard, args: Args) -> Response:
    row = _window_row(d, args)
    by, n = args.text("by"), args.integer("n")
    section = row["web"]
    return json_response({**_window_fields(row), "by": by, **{m: section[m] for m in METRICS},
                          "top_servers": section["top_servers"][by][:n],
                          "top_clients": section["top_clients"][by][:n]})


def exporters(d: Dashboard, args: Args) -> Response:
    session = d.decoder()
    state = "workers" if d.workers > 0 else "live" if session is not None else "unavailable"
    now = d.clock_ms()
    return json_response({"time_ms": now, "time": iso(now), "decoder_state": state,
                          "exporters": exporter_health(d.counters, d.traffic, d.activity, session)})


def hosts_overview(d: Dashboard, args: Args) -> Response:
    interval = args.text("interval")
    return json_response({"interval": interval, **d.hosts.overview(interval, args.time("time"))})


def _tracked(d: Dashboard, address: str) -> dict[str, bool]:
    tracked = d.hosts.tracked(address)
    if not (tracked["watched"] or tracked["local"]):
        raise not_found(f"{address} is neither watched nor in stats.local_networks: watch it first "
                        f"(POST {API}/hosts/watched)")
    return tracked


def host(d: Dashboard, args: Args) -> Response:
    address = args.text("address")
    _tracked(d, address)
    return json_response(d.hosts.lookup(address, args.text("interval"), args.time("time")))


def host_series(d: Dashboard, args: Args) -> Response:
    address, interval = args.text("address"), args.text("interval")
    tracked = _tracked(d, address)
    start, end = _range(args)
    points = d.hosts.series(address, interval, start, end, args.integer("limit"))
    return json_response({"address": address, **tracked, "interval": interval, "count": len(points),
                          "points": points})


def watched(d: Dashboard, args: Args) -> Response:
    return json_response({"watched": d.hosts.watched()})


def watch(d: Dashboard, args: Args) -> Response:
    body = args.values["body"]
    if not isinstance(body, dict) or not isinstance(body.get("address"), str):
        raise bad_parameter("address", 'the body must be a JSON object {"address": "IP address"}')
    unknown = sorted(set(body) - {"address"})
    if unknown:
        raise bad_parameter(unknown[0], "unknown field in the body (only 'address')")
    address = canonical_address("address", body["address"])
    changed = d.hosts.watch(address)
    return json_response({"address": address, "changed": changed, "watched": d.hosts.watched()},
                         201 if changed else 200)


def unwatch(d: Dashboard, args: Args) -> Response:
    address = args.text("address")
    changed = d.hosts.unwatch(address)
    if not changed:
        raise not_found(f"{address} is not watched")
    return json_response({"address": address, "changed": True, "watched": d.hosts.watched()})


def stream(d: Dashboard, args: Args) -> Response:
    if d.broadcaster.closed:
        raise ApiError(503, "shutting_down", "the server is stopping")
    return EventStream(d.broadcaster, args.texts("interval"), args.text("view"), final_only=args.flag("final"),
                       compact=args.flag("compact"), heartbeat_ms=d.heartbeat_ms, clock_ms=d.clock_ms)


def metrics(d: Dashboard, args: Args) -> Response:
    drops = d.kernel_drops()  # reading them also moves collector_kernel_drops_total
    families = prometheus.counter_families(d.counters)
    gauge = prometheus.Family
    now = d.clock_ms()
    families.append(gauge("flowscope_build_info", "gauge", "flowscope version.", [({"version": __version__}, 1)]))
    families.append(gauge("flowscope_start_time_seconds", "gauge", "When this process started (Unix time).",
                          [({}, d.started_ms / 1000)]))
    with d.engine_lock:
        delays = d.engine.live_delay_quantiles()
        open_windows = {r.name: sorted(d.engine.open_windows(level)) for level, r in enumerate(d.engine.resolutions)}
    delay = gauge("flowscope_live_delay_seconds", "gauge",
                  "Arrival of a flow to its live result being published (last 100k batches).")
    for quantile, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"), ("1", "max_ms")):
        if key in delays:
            delay.samples.append(({"quantile": quantile}, delays[key] / 1000))
    families.append(delay)
    grace = d.engine.config.grace_ms
    counts = gauge("flowscope_open_windows", "gauge", "Windows open in the engine, per interval.")
    lag = gauge("flowscope_window_lag_seconds", "gauge",
                "How late the oldest open window is in closing (0 when on time), per interval.")
    for resolution in d.catalog.resolutions:
        starts = open_windows.get(resolution.name, [])
        counts.samples.append(({"interval": resolution.name}, len(starts)))
        due = starts[0] + resolution.duration_ms + grace if starts else now
        lag.samples.append(({"interval": resolution.name}, max(0, now - due) / 1000))
    families += [counts, lag]
    families.append(gauge("flowscope_kernel_drops", "gauge", "Kernel drop count of each UDP socket (/proc/net/udp).",
                          [({"listener": k}, v) for k, v in sorted(drops.items()) if v is not None]))
    traffic = sorted(d.traffic.snapshot().items())
    for metric in METRICS:
        families.append(gauge(f"flowscope_exporter_{metric}_total", "counter",
                              f"{metric.capitalize()} received per exporter and domain (closed finest windows).",
                              [({"exporter": e, "domain": str(n)}, getattr(t, metric)) for (e, n), t in traffic]))
    seen = d.activity.last_seen() if d.activity is not None else {}
    families.append(gauge("flowscope_exporter_last_seen_timestamp_seconds", "gauge",
                          "When a datagram last arrived from the exporter (Unix time).",
                          [({"exporter": e}, ms / 1000) for e, ms in sorted(seen.items())]))
    families.append(gauge("flowscope_stream_subscribers", "gauge", "Open live streams.",
                          [({}, d.broadcaster.subscribers)]))
    return Response(prometheus.render(families), media_type=prometheus.CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


# -------------------------------------------------------------------------- declarations

_N = Param("n", "int", "at most this many entries (the stored lists hold stats.top_n)", default=10, minimum=1,
           maximum=1000)
_REPORT_WINDOW = (interval_param(), VIEW, TIME, FINAL)
_ADDRESS = Param("address", "address", "an IPv4 or IPv6 address", location="path", examples=("192.0.2.10",))


def _openapi_placeholder(d: Dashboard, args: Args) -> Response:  # replaced in build_app
    raise AssertionError


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", f"{API}/health", "health", "Liveness, version and clock", health, schema="Health",
             errors=(400,)),
    Endpoint("GET", f"{API}/version", "version", "flowscope version", version, schema="Version"),
    Endpoint("GET", f"{API}/config", "config", "Intervals, views, top-N, web ports, host settings", config,
             schema="Config"),
    Endpoint("GET", f"{API}/views", "views", "The views (named filters); 'all' is the unfiltered traffic", views,
             schema="Views"),
    Endpoint("GET", f"{API}/results", "results", "Window results of a range, oldest first", results,
             params=(interval_param(), VIEW, FROM, TO, FINAL, limit_param(100, 10_000), FORMAT, DOWNLOAD),
             schema="ResultList", media=(JSON, CSV),
             description="Windows whose start is in [from, to); the newest `limit` of them. CSV: one row per "
                         "window (totals, protocol split, web, late flows)."),
    Endpoint("GET", f"{API}/results/latest", "latest", "The newest window result", latest,
             params=(interval_param(), VIEW, FINAL), schema="Result", errors=(400, 404)),
    Endpoint("GET", f"{API}/report", "report", "One report: the window holding `time` (default newest)", report,
             params=(*_REPORT_WINDOW, FORMAT, DOWNLOAD), schema="Result", media=(JSON, CSV), errors=(400, 404),
             description="JSON: the window result (docs/report-schema.md). CSV: one row per number "
                         "(section, group, rank, key, flows, packets, bytes). CSV always comes as a download; "
                         "JSON with download=true."),
    Endpoint("GET", f"{API}/series", "series", "Compact time series for charts", series,
             params=(interval_param(default=FINEST), VIEW, FROM, TO, FINAL, limit_param(300, 10_000),
                     Param("fill", "bool", "add zero points for windows without traffic", default=False),
                     FORMAT, DOWNLOAD),
             schema="Series", media=(JSON, CSV)),
    Endpoint("GET", f"{API}/top-ports", "top_ports", "Top TCP and UDP ports of one window", top_ports,
             params=(*_REPORT_WINDOW, BY, _N,
                     Param("protocol", "choice", "tcp, udp or both", default="both", choices=("tcp", "udp", "both"))),
             schema="TopPorts", errors=(400, 404)),
    Endpoint("GET", f"{API}/web", "web", "Web traffic of one window: totals, top servers and clients", web,
             params=(*_REPORT_WINDOW, BY, _N), schema="Web", errors=(400, 404)),
    Endpoint("GET", f"{API}/exporters", "exporters", "Every exporter and domain, with its health", exporters,
             schema="Exporters"),
    Endpoint("GET", f"{API}/hosts", "hosts", "Watched hosts, local networks and the top local hosts", hosts_overview,
             params=(interval_param(), TIME), schema="Hosts"),
    Endpoint("GET", f"{API}/hosts/watched", "watched_hosts", "The watched hosts", watched, schema="Watched"),
    Endpoint("POST", f"{API}/hosts/watched", "watch_host", "Watch a host (exact statistics from now on)", watch,
             schema="WatchChange", status=(200, 201), errors=(400, 413, 415), body="WatchRequest",
             description="201 when the host was added, 200 when it was already watched."),
    Endpoint("DELETE", f"{API}/hosts/watched/{{address}}", "unwatch_host", "Stop watching a host", unwatch,
             params=(_ADDRESS,), schema="WatchChange", errors=(400, 404)),
    Endpoint("GET", f"{API}/hosts/{{address}}", "host", "One host's statistics in one window", host,
             params=(_ADDRESS, interval_param(), TIME), schema="Host", errors=(400, 404),
             description="404 when the host is neither watched nor in a local network. `stats` is null when "
                         "the window holds no data for it."),
    Endpoint("GET", f"{API}/hosts/{{address}}/series", "host_series", "One host's statistics per window", host_series,
             params=(_ADDRESS, interval_param(), FROM, TO, limit_param(300, 10_000)), schema="HostSeries",
             errors=(400, 404)),
    Endpoint("GET", f"{API}/stream", "stream", "Live window results as Server-Sent Events", stream,
             params=(Param("interval", "intervals", "intervals to follow, comma-separated", default=FINEST,
                           examples=("1s", "1s,1m")),
                     VIEW, Param("final", "bool", "only final results", default=False),
                     Param("compact", "bool", "send series points (as /series) instead of full results",
                           default=False)),
             media=(EVENTS,), errors=(400, 503), streaming=True,
             description="Events: `hello`, then `result` for every window update (provisional and final), "
                         "`dropped` when this client fell behind, and a keepalive comment every heartbeat."),
    Endpoint("GET", "/metrics", "metrics", "Prometheus metrics (text format 0.0.4)", metrics, media=(TEXT,),
             tag="metrics"),
    Endpoint("GET", f"{API}/openapi.json", "openapi", "This document", _openapi_placeholder, tag="meta"),
)


# ---------------------------------------------------------------------------------- app


def _handler(endpoint: Endpoint, d: Dashboard, run: Callable[[Dashboard, Args], Response]) -> Callable[
        [Request], Awaitable[Response]]:
    catalog = d.catalog

    async def handle(request: Request) -> Response:
        try:
            args = parse_args(endpoint.params, request.query_params.multi_items(), request.path_params, catalog,
                              d.clock_ms())
            if endpoint.body is not None:
                args.values["body"] = await _json_body(request)
            if endpoint.streaming:
                return run(d, args)
            return await run_in_threadpool(run, d, args)
        except ApiError as error:
            return error_response(error)
        except ConfigError as error:  # a store-level check: report it as a bad request
            return error_response(ApiError(400, "bad_parameter", str(error)))

    return handle


async def _json_body(request: Request) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != JSON:
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_parameter("body", f"not valid JSON ({error})") from None


_PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flowscope</title></head>
<body><h1>flowscope</h1><p>The dashboard pages are not installed. The API is at
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>; live results stream from
<a href="/api/v1/stream">/api/v1/stream</a>; metrics at <a href="/metrics">/metrics</a>.</p></body></html>
"""


def build_app(d: Dashboard) -> Starlette:
    """The ASGI application over a dashboard's sources."""
    spec = document(ENDPOINTS, d.catalog, token=bool(d.token))

    def openapi(_: Dashboard, __: Args) -> Response:
        return json_response(spec)

    routes: list[BaseRoute] = []
    for endpoint in ENDPOINTS:
        run = openapi if endpoint.operation_id == "openapi" else endpoint.handler
        routes.append(Route(endpoint.path, _handler(endpoint, d, run), methods=[endpoint.method],
                            name=endpoint.operation_id))

    endpoint_routes = list(routes)

    async def api_not_found(request: Request) -> Response:
        allowed = sorted({method for route in endpoint_routes if isinstance(route, Route)
                          and route.matches(request.scope)[0] == Match.PARTIAL for method in route.methods or ()})
        if allowed:  # the path exists, with other methods
            return json_response({"error": "method_not_allowed",
                                  "message": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
                                 405, {"Allow": ", ".join(allowed)})
        return error_response(not_found(f"no such endpoint: {request.url.path} (see {API}/openapi.json)"))

    async def index(request: Request) -> Response:
        page = d.static_dir / "index.html"
        if page.is_file():
            return FileResponse(page, headers={"Cache-Control": "no-cache"})
        return HTMLResponse(_PLACEHOLDER)

    routes.append(Route("/api/{rest:path}", api_not_found,
                        methods=["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]))
    routes.append(Route("/", index, methods=["GET"]))
    if d.static_dir.is_dir():
        routes.append(Mount("/", app=StaticFiles(directory=d.static_dir, html=True), name="static"))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        response = json_response({"error": code, "message": str(error.detail)}, error.status_code,
                                 dict(error.headers or {}))
        return response

    async def server_error(request: Request, error: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        d.counters.add("web_errors_total")
        return json_response({"error": "internal", "message": "internal error (logged)"}, 500)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(TokenAuth, token=d.token)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.dashboard = d
    app.state.openapi = spec
    return app
