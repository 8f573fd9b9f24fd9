"""Request parameters, declared once: parsed from the query string and described in OpenAPI.

Every endpoint lists its ``Param``s; the same declaration validates a request (a bad value is a
400 naming the parameter, never a 500) and writes the parameter into the OpenAPI document, so the
document cannot forget one. Values whose choices depend on the configuration (intervals, views)
are checked against a ``Catalog`` built from it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flowscope.aggregate.windows import Resolution, check_resolutions

# Times accepted: the API deals in UTC milliseconds since the epoch. Beyond this the calendar
# arithmetic (and SQLite's 64-bit integers) would not be meaningful.
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_RELATIVE = re.compile(r"^-(\d{1,12})(ms|s|m|min|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}

Kind = Literal["interval", "intervals", "view", "time", "bool", "int", "choice", "address"]
Location = Literal["query", "path"]
# Interval defaults that depend on the configuration.
FINEST = "<finest>"
REPORT = "<report>"
ALWAYS_ALLOWED = frozenset({"token"})  # the access token may ride along on any request


class ApiError(Exception):
    """An error answered as JSON: ``{"error": code, "message": ..., "parameter": ...}``."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError(400, "bad_parameter", f"{name}: {message}", parameter=name)


# ------------------------------------------------------------------------------------ times


def iso(time_ms: int) -> str:
    """UTC milliseconds → '2026-11-27T13:00:00.000Z'."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=time_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(name: str, text: str, now_ms: int) -> int:
    """Epoch milliseconds, ISO 8601 (naive = UTC), ``now`` or ``-<duration>`` (before now)."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        if len(value) > 16 or int(value) > MAX_TIME_MS:
            raise bad_parameter(name, f"{text!r} is out of range (milliseconds since 1970, up to year 9999)")
        return int(value)
    if value == "now":
        return now_ms
    relative = _RELATIVE.match(value)
    if relative:
        moment = now_ms - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
        if moment < 0:
            raise bad_parameter(name, f"{text!r} reaches before 1970")
        return moment
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_parameter(
            name, f"{text!r} is not a time: give UTC milliseconds, ISO 8601 (2026-11-27T13:00:00Z), "
                  "'now' or a duration before now ('-5m')") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    except OverflowError:
        raise bad_parameter(name, f"{text!r} is out of range") from None
    moment = delta // dt.timedelta(milliseconds=1)
    if not 0 <= moment <= MAX_TIME_MS:
        raise bad_parameter(name, f"{text!r} is before 1970 or after 9999")
    return int(moment)


def canonical_address(name: str, text: str) -> str:
    """An IP address as flowscope writes it: IPv4 dotted (also for IPv4-mapped IPv6), IPv6 compressed."""
    if "%" in text:
        raise bad_parameter(name, f"{text!r}: zone indices (%...) are not part of flow addresses")
    try:
        parsed = ipaddress.ip_address(text.strip())
    except ValueError:
        raise bad_parameter(name, f"{text!r} is not an IPv4 or IPv6 address") from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


# ---------------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the configuration allows: interval names (finest first) and view names."""

    resolutions: tuple[Resolution, ...]
    views: tuple[str, ...]

    @classmethod
    def of(cls, windows_ms: Sequence[int], views: Sequence[str]) -> Catalog:
        return cls(tuple(check_resolutions(list(windows_ms))), tuple(views))

    @property
    def intervals(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resolutions)

    @property
    def finest(self) -> str:
        return self.resolutions[0].name

    @property
    def report(self) -> str:
        """The default report interval: 1m when configured, else the second finest (or the finest)."""
        names = self.intervals
        if "1m" in names:
            return "1m"
        return names[1] if len(names) > 1 else names[0]

    def resolution(self, name: str) -> Resolution:
        for resolution in self.resolutions:
            if resolution.name == name:
                return resolution
        raise KeyError(name)


# ------------------------------------------------------------------------------------ params


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: Kind
    description: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    location: Location = "query"
    examples: tuple[str, ...] = ()

    def resolved_default(self, catalog: Catalog) -> Any:
        default = self.default
        if default == FINEST:
            default = catalog.finest
        elif default == REPORT:
            default = catalog.report
        if self.kind == "intervals" and isinstance(default, str):
            return (default,)
        return default

    def parse(self, raw: str, catalog: Catalog, now_ms: int) -> Any:
        name, kind = self.name, self.kind
        if kind == "interval":
            return _one_of(name, raw, catalog.intervals, "interval")
        if kind == "intervals":
            items = [item.strip() for item in raw.split(",")]
            if not all(items):
                raise bad_parameter(name, f"{raw!r}: give interval names separated by commas, e.g. 1s,1m")
            return tuple(dict.fromkeys(_one_of(name, item, catalog.intervals, "interval") for item in items))
        if kind == "view":
            return _one_of(name, raw, catalog.views, "view")
        if kind == "choice":
            return _one_of(name, raw, self.choices, "value")
        if kind == "time":
            return parse_time(name, raw, now_ms)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise bad_parameter(name, f"{raw!r} is not a boolean (true or false)")
        if kind == "int":
            text = raw.strip()
            if not re.fullmatch(r"-?\d{1,18}", text):
                raise bad_parameter(name, f"{raw!r} is not an integer")
            value = int(text)
            if self.minimum is not None and value < self.minimum:
                raise bad_parameter(name, f"{value} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise bad_parameter(name, f"{value} is above the maximum {self.maximum}")
            return value
        if kind == "address":
            return canonical_address(name, raw)
        raise AssertionError(kind)

    def schema(self, catalog: Catalog) -> dict[str, Any]:
        kind = self.kind
        schema: dict[str, Any]
        if kind == "interval":
            schema = {"type": "string", "enum": list(catalog.intervals)}
        elif kind == "intervals":
            schema = {"type": "array", "items": {"type": "string", "enum": list(catalog.intervals)}, "minItems": 1}
        elif kind == "view":
            schema = {"type": "string", "enum": list(catalog.views)}
        elif kind == "choice":
            schema = {"type": "string", "enum": list(self.choices)}
        elif kind == "bool":
            schema = {"type": "boolean"}
        elif kind == "int":
            schema = {"type": "integer"}
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        else:  # time, address
            schema = {"type": "string"}
        default = self.resolved_default(catalog)
        if default is not None:
            schema["default"] = list(default) if isinstance(default, tuple) else default
        return schema

    def openapi(self, catalog: Catalog) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name, "in": self.location, "description": self.description,
            "required": self.required or self.location == "path", "schema": self.schema(catalog),
        }
        if self.kind == "intervals":
            document.update(style="form", explode=False)
        if self.examples:
            document["examples"] = {f"example{i}": {"value": value} for i, value in enumerate(self.examples)}
        return document


def _one_of(name: str, raw: str, choices: Sequence[str], what: str) -> str:
    value = raw.strip()
    if value not in choices:
        listed = ", ".join(choices) if choices else "(none configured)"
        raise bad_parameter(name, f"{raw!r} is not a configured {what}; one of: {listed}")
    return value


@dataclass(slots=True)
class Args:
    """Parsed parameters of one request (defaults filled in), with typed accessors."""

    values: dict[str, Any] = field(default_factory=dict)

    def text(self, name: str) -> str:
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.values[name]
        assert isinstance(value, tuple)
        return value

    def integer(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int) and not isinstance(value, bool)
        return value

    def time(self, name: str) -> int | None:
        value = self.values.get(name)
        assert value is None or isinstance(value, int)
        return value

    def flag(self, name: str) -> bool:
        value = self.values[name]
        assert isinstance(value, bool)
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.values.get(name)
        assert value is None or isinstance(value, str)
        return value


def parse_args(
    params: Sequence[Param], query: Sequence[tuple[str, str]], path: Mapping[str, str], catalog: Catalog,
    now_ms: int,
) -> Args:
    """Validate a request's query string and path parameters against the declarations."""
    declared = {p.name: p for p in params if p.location == "query"}
    seen: dict[str, str] = {}
    for name, raw in query:
        if name in ALWAYS_ALLOWED:
            continue
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise bad_parameter(name, f"unknown parameter (this endpoint takes: {known})")
        if name in seen:
            raise bad_parameter(name, "given more than once")
        seen[name] = raw
    args = Args()
    for param in params:
        raw_value = path.get(param.name) if param.location == "path" else seen.get(param.name)
        if raw_value is None or not raw_value.strip():  # empty means "not given"
            if param.required or param.location == "path":
                raise bad_parameter(param.name, "is required")
            args.values[param.name] = param.resolved_default(catalog)
            continue
        args.values[param.name] = param.parse(raw_value, catalog, now_ms)
    return args


def interval_param(description: str = "window length", default: str = REPORT) -> Param:
    return Param("interval", "interval", description, default=default)


VIEW = Param("view", "view", "the view: 'all' (unfiltered) or a configured view's name", default="all")
FROM = Param("from", "time", "windows starting at or after this time (UTC ms, ISO 8601, 'now' or '-5m')",
             examples=("-10m", "2026-11-27T13:00:00Z", "1795786740000"))
TO = Param("to", "time", "windows starting before this time (same forms as 'from')", examples=("now",))
TIME = Param("time", "time", "a time inside the wanted window (default: the newest window)",
             examples=("2026-11-27T13:05:00Z", "-1h"))
FINAL = Param("final", "bool", "only final results (closed windows), no provisional ones", default=False)
FORMAT = Param("format", "choice", "json or csv", default="json", choices=("json", "csv"))
DOWNLOAD = Param("download", "bool", "answer as a file download (Content-Disposition: attachment)", default=False)
BY = Param("by", "choice", "rank by flows, packets or bytes", default="flows", choices=("flows", "packets", "bytes"))


def limit_param(default: int, maximum: int) -> Param:
    return Param("limit", "int", f"at most this many windows, the newest of the range (1-{maximum})",
                 default=default, minimum=1, maximum=maximum)
