"""The OpenAPI 3.0 document, generated from the endpoint declarations.

Each ``Endpoint`` carries its parameters (``params.Param``: the same objects that validate
requests), its body, its answers and their schemas; ``document`` turns the list into the OpenAPI
document served at ``/api/v1/openapi.json``. Enumerations that depend on the configuration
(intervals, views) are filled in from the ``Catalog``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flowscope import __version__
from flowscope.serve.params import Catalog, Param

JSON = "application/json"
CSV = "text/csv"
EVENTS = "text/event-stream"
TEXT = "text/plain"

ERROR_TEXT = {
    400: "a parameter (named in the answer) is missing or invalid",
    401: "the access token is missing or wrong",
    404: "no such result, host or path",
    405: "method not allowed",
    413: "request body too large",
    415: "the body must be application/json",
    503: "the server is shutting down",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # Starlette/OpenAPI template: /api/v1/hosts/{address}
    operation_id: str
    summary: str
    handler: Callable[..., Any]
    params: tuple[Param, ...] = ()
    schema: str | None = None  # component schema of the JSON answer
    media: tuple[str, ...] = (JSON,)
    status: tuple[int, ...] = (200,)
    errors: tuple[int, ...] = (400,)
    body: str | None = None  # component schema of a JSON request body
    description: str = ""
    tag: str = "api"
    streaming: bool = False  # the handler returns a streaming response without blocking


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Sequence[str], properties: dict[str, Any], *, extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": list(required), "properties": properties}
    if not extra:
        schema["additionalProperties"] = False
    return schema


INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_INT = {"type": "integer", "nullable": True}
NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
METRICS = {"flows": INT, "packets": INT, "bytes": INT}
WINDOW = {"interval": STR, "start_ms": INT, "start": TIME, "end_ms": INT, "end": TIME, "final": BOOL}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error", "message"], {"error": STR, "message": STR, "parameter": STR}),
    "Metrics": _obj(["flows", "packets", "bytes"], METRICS),
    "Port": _obj(["port", "flows", "packets", "bytes"], {"port": INT, **METRICS}),
    "Address": _obj(["address", "flows", "packets", "bytes"], {"address": STR, **METRICS}),
    "Window": _obj(list(WINDOW), WINDOW),
    "ByProtocol": _obj(["tcp", "udp", "icmp", "other"], {p: _ref("Metrics") for p in ("tcp", "udp", "icmp", "other")}),
    "Ranked": _obj(["flows", "packets", "bytes"], {m: _list(_ref("Port")) for m in ("flows", "packets", "bytes")}),
    "RankedAddresses": _obj(["flows", "packets", "bytes"],
                            {m: _list(_ref("Address")) for m in ("flows", "packets", "bytes")}),
    "Result": _obj(
        [*WINDOW, "view", "totals", "top_ports", "web", "late_flows"],
        {**WINDOW, "view": STR,
         "totals": _obj(["flows", "packets", "bytes", "by_protocol", "by_exporter"], {
             **METRICS, "by_protocol": _ref("ByProtocol"),
             "by_exporter": _list(_obj(["exporter", "domain", *METRICS], {"exporter": STR, "domain": INT, **METRICS})),
         }),
         "top_ports": _obj(["tcp", "udp"], {"tcp": _ref("Ranked"), "udp": _ref("Ranked")}),
         "web": _obj([*METRICS, "top_servers", "top_clients"], {
             **METRICS, "top_servers": _ref("RankedAddresses"), "top_clients": _ref("RankedAddresses")}),
         "late_flows": INT,
         "hosts": {"type": "object", "description": "host statistics, when the engine computes them"}},
    ),
    "ResultList": _obj(["interval", "view", "from_ms", "to_ms", "count", "results"], {
        "interval": STR, "view": STR, "from_ms": NULLABLE_INT, "to_ms": NULLABLE_INT, "count": INT,
        "results": _list(_ref("Result"))}),
    "Point": _obj(["start_ms", "start", "end_ms", "final", *METRICS, "by_protocol", "web", "late_flows"], {
        "start_ms": INT, "start": TIME, "end_ms": INT, "final": BOOL, **METRICS,
        "by_protocol": _ref("ByProtocol"), "web": _ref("Metrics"), "late_flows": INT,
        "filled": {"type": "boolean", "description": "no result was stored for this window: zeros"}}),
    "Series": _obj(["interval", "view", "from_ms", "to_ms", "count", "points"], {
        "interval": STR, "view": STR, "from_ms": NULLABLE_INT, "to_ms": NULLABLE_INT, "count": INT,
        "points": _list(_ref("Point"))}),
    "TopPorts": _obj([*WINDOW, "view", "by"], {
        **WINDOW, "view": STR, "by": STR, "tcp": _list(_ref("Port")), "udp": _list(_ref("Port"))}),
    "Web": _obj([*WINDOW, "view", "by", *METRICS, "top_servers", "top_clients"], {
        **WINDOW, "view": STR, "by": STR, **METRICS, "top_servers": _list(_ref("Address")),
        "top_clients": _list(_ref("Address"))}),
    "Domain": _obj(["domain", "versions", *METRICS, "last_seen_ms", "last_seen", "sequence", "templates",
                    "sampling", "interfaces"], {
        "domain": INT, "versions": _list(INT), **METRICS, "last_seen_ms": NULLABLE_INT, "last_seen": NULLABLE_TIME,
        "sequence": {**_obj(["received", "lost", "reordered"], {"received": INT, "lost": INT, "reordered": INT}),
                     "nullable": True},
        "templates": _list(_obj(["id", "fields", "options", "scope_fields"],
                                {"id": INT, "fields": INT, "options": BOOL, "scope_fields": INT})),
        "sampling": {**_obj(["rate", "by_sampler"], {"rate": NULLABLE_INT, "by_sampler": {
            "type": "object", "additionalProperties": INT}}), "nullable": True},
        "interfaces": {"type": "object", "additionalProperties": STR}}),
    "Exporter": _obj(["address", "last_seen_ms", "last_seen", "datagrams", "datagram_bytes", "dropped",
                      "packets_by_version", "records", "decode_errors", "decode_errors_total", "sequence_lost",
                      "templates", "pending_dropped", "time_unknown", *METRICS, "domains"], {
        "address": STR, "last_seen_ms": NULLABLE_INT, "last_seen": NULLABLE_TIME, "datagrams": INT,
        "datagram_bytes": INT, "dropped": {"type": "object", "additionalProperties": INT},
        "packets_by_version": {"type": "object", "additionalProperties": INT},
        "records": _obj(["data", "options"], {"data": INT, "options": INT}),
        "decode_errors": {"type": "object", "additionalProperties": INT}, "decode_errors_total": INT,
        "sequence_lost": {"type": "object", "additionalProperties": INT},
        "templates": {"type": "object", "additionalProperties": INT},
        "pending_dropped": {"type": "object", "additionalProperties": INT}, "time_unknown": INT, **METRICS,
        "domains": _list(_ref("Domain"))}),
    "Exporters": _obj(["time_ms", "time", "decoder_state", "exporters"], {
        "time_ms": INT, "time": TIME,
        "decoder_state": {"type": "string", "enum": ["live", "workers", "unavailable"]},
        "exporters": _list(_ref("Exporter"))}),
    "Host": _obj(["address", "watched", "local", "window", "stats", "source"], {
        "address": STR, "watched": BOOL, "local": BOOL, "window": {**_ref("Window"), "nullable": True},
        "stats": {"type": "object", "nullable": True},
        "source": {"type": "string", "nullable": True, "enum": ["watched", "local_top", "engine", None]}}),
    "HostPoint": _obj([*WINDOW, "stats", "source"], {
        **WINDOW, "stats": {"type": "object", "nullable": True},
        "source": {"type": "string", "nullable": True, "enum": ["watched", "local_top", "engine", None]}}),
    "HostSeries": _obj(["address", "watched", "local", "interval", "count", "points"], {
        "address": STR, "watched": BOOL, "local": BOOL, "interval": STR, "count": INT,
        "points": _list(_ref("HostPoint"))}),
    "Hosts": _obj(["interval", "watched", "local_networks", "window", "available", "watched_stats", "local"], {
        "interval": STR, "watched": _list(STR), "local_networks": _list(STR),
        "window": {**_ref("Window"), "nullable": True}, "available": BOOL,
        "watched_stats": _list({"type": "object"}), "local": {"type": "object", "nullable": True}}),
    "Watched": _obj(["watched"], {"watched": _list(STR)}),
    "WatchChange": _obj(["address", "changed", "watched"], {"address": STR, "changed": BOOL, "watched": _list(STR)}),
    "WatchRequest": _obj(["address"], {"address": {"type": "string", "example": "192.0.2.10"}}),
    "View": _obj(["name", "filter"], {"name": STR, "filter": {"type": "string", "nullable": True}}),
    "Views": _obj(["views"], {"views": _list(_ref("View"))}),
    "Interval": _obj(["name", "duration_ms", "retention_ms"], {"name": STR, "duration_ms": INT, "retention_ms": INT}),
    "Config": _obj(["version", "intervals", "live_interval", "report_interval", "views", "top_n", "port_side",
                    "web", "local_networks", "watched_hosts", "time_base", "grace_ms", "provisional_interval_ms",
                    "auth", "stream"], {
        "version": STR, "intervals": _list(_ref("Interval")), "live_interval": STR, "report_interval": STR,
        "views": _list(_ref("View")), "top_n": INT, "port_side": STR,
        "web": _obj(["tcp_ports", "udp_ports"], {"tcp_ports": _list(INT), "udp_ports": _list(INT)}),
        "local_networks": _list(STR), "watched_hosts": _list(STR), "time_base": STR, "grace_ms": INT,
        "provisional_interval_ms": INT, "auth": BOOL,
        "stream": _obj(["heartbeat_ms", "queue_events"], {"heartbeat_ms": INT, "queue_events": INT})}),
    "Health": _obj(["status", "version", "time_ms", "time", "started_ms", "started", "uptime_ms", "subscribers"], {
        "status": {"type": "string", "enum": ["ok"]}, "version": STR, "time_ms": INT, "time": TIME,
        "started_ms": INT, "started": TIME, "uptime_ms": INT, "subscribers": INT}),
    "Version": _obj(["version", "api"], {"version": STR, "api": STR}),
}


def _responses(endpoint: Endpoint, token: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in endpoint.status:
        content: dict[str, Any] = {}
        for media in endpoint.media:
            if media == JSON:
                content[media] = {"schema": _ref(endpoint.schema) if endpoint.schema else {"type": "object"}}
            else:
                content[media] = {"schema": {"type": "string"}}
        description = "created" if status == 201 else "OK"
        responses[str(status)] = {"description": description, "content": content}
    errors = set(endpoint.errors) | ({401} if token else set())
    for status in sorted(errors):
        responses[str(status)] = {"description": ERROR_TEXT[status],
                                  "content": {JSON: {"schema": _ref("Error")}}}
    return responses


def document(endpoints: Sequence[Endpoint], catalog: Catalog, *, token: bool) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "parameters": [param.openapi(catalog) for param in endpoint.params],
            "responses": _responses(endpoint, token),
        }
        if endpoint.description:
            operation["description"] = endpoint.description
        if endpoint.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {JSON: {"schema": _ref(endpoint.body)}}}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    result: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "flowscope",
            "version": __version__,
            "description": "Live traffic statistics from NetFlow v5/v9 and IPFIX exports. Times are UTC "
                           "milliseconds since 1970 (…_ms) with ISO 8601 texts next to them. Errors are JSON "
                           "objects naming the bad parameter.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if token:
        result["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "web.token"},
            "query": {"type": "apiKey", "in": "query", "name": "token"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "flowscope_token"},
        }
        result["security"] = [{"bearer": []}, {"query": []}, {"cookie": []}]
    return result
