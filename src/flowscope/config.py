"""Configuration: one TOML file, overridden by FLOWSCOPE_* environment variables, then by flags.

Every key is declared once below with its type, default and meaning; the loader flattens the TOML
into dotted keys (``engine.time_base``), rejects unknown keys with a hint, converts values
(durations like "5s", sizes like "32MiB", lists), and builds the typed configuration objects of
each stage. An error always names the key and where the value came from.

Environment: ``FLOWSCOPE_ENGINE_TIME_BASE=end`` sets ``engine.time_base`` (dots → underscores,
upper case); lists are comma-separated. Flags: ``--set engine.time_base=end`` (repeatable).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.filters import compile_filter
from flowscope.aggregate.stats import StatsSpec, ViewSpec, WebSpec
from flowscope.aggregate.windows import TIME_BASES, check_resolutions, parse_duration_ms
from flowscope.collect.tcp import TcpListenerConfig
from flowscope.collect.udp import UdpListenerConfig
from flowscope.decode.session import DecoderConfig
from flowscope.errors import ConfigError
from flowscope.export.parquet import ParquetWriterConfig
from flowscope.normalize import NormalizeConfig
from flowscope.pipeline import CollectConfig
from flowscope.store import StoreConfig

ENV_PREFIX = "FLOWSCOPE_"
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6,
               "GB": 10**9}


# ------------------------------------------------------------------- value types
def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from None


def _port(key: str, value: object) -> int:
    port = _integer(key, value)
    if not 0 <= port <= 65_535:
        raise ConfigError(f"{key}: {port} is not a port number (0-65535)")
    return port


def _boolean(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _duration(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{key}: expected a duration such as '5s', got {value!r}")
    return parse_duration_ms(value, key=key)


def _size(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{key}: expected a size such as '32MiB', got {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _list_of(item: Callable[[str, object], Any]) -> Callable[[str, object], list[Any]]:
    def convert(key: str, value: object) -> list[Any]:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [item(f"{key}[{i}]", v) for i, v in enumerate(value)]

    return convert


def _choice(*choices: str) -> Callable[[str, object], str]:
    def convert(key: str, value: object) -> str:
        text = _string(key, value)
        if text not in choices:
            raise ConfigError(f"{key}: {text!r} is not one of {', '.join(choices)}")
        return text

    return convert


def _host_port(key: str, value: object) -> str:
    text = _string(key, value)
    if text and not re.match(r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$", text):
        raise ConfigError(f"{key}: expected HOST:PORT (or empty to disable), got {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class Key:
    convert: Callable[[str, object], Any]
    default: Any
    help: str


# ------------------------------------------------------------------------ schema
KEYS: dict[str, Key] = {
    "collect.host": Key(_string, "0.0.0.0", "address the listeners bind (:: for IPv6 and IPv4)"),
    "collect.udp_ports": Key(_list_of(_port), [2055, 4739], "UDP ports for NetFlow v5/v9 and IPFIX"),
    "collect.tcp_ports": Key(_list_of(_port), [4739], "TCP ports for IPFIX over TCP"),
    "collect.allowed_exporters": Key(_list_of(_string), [], "exporter networks accepted (empty: all)"),
    "collect.receive_buffer": Key(_size, 32 << 20, "UDP socket receive buffer to ask the kernel for"),
    "collect.workers": Key(_integer, 0, "extra collector processes sharing the UDP ports (SO_REUSEPORT)"),
    "decode.apply_sampling": Key(_boolean, True, "multiply packets and bytes by the sampling rate"),
    "decode.max_templates_per_exporter": Key(_integer, 4096, "template store bound per exporter"),
    "decode.pending_max_sets_per_exporter": Key(_integer, 1024, "data sets held for a missing template"),
    "decode.pending_max_age": Key(_duration, 60_000, "how long data waits for its template"),
    "engine.windows": Key(_list_of(_duration), [1_000, 60_000, 3_600_000], "window lengths: live series, reports"),
    "engine.time_base": Key(_choice(*TIME_BASES), "received", "which time places a flow in a window"),
    "engine.grace": Key(_duration, 1_000, "how long after its end a window stays open"),
    "engine.provisional_interval": Key(_duration, 1_000, "how often open windows publish results"),
    "engine.checkpoint_interval": Key(_duration, 5_000, "how often open windows are saved to disk"),
    "engine.background": Key(_boolean, True, "minute/hour results and checkpoints off the live path (own thread)"),
    "engine.state_dir": Key(_string, "var", "where checkpoints (and the default database) live"),
    "stats.top_n": Key(_integer, 10, "length of top lists"),
    "stats.port_side": Key(_choice("dst", "either"), "dst", "top ports by destination port or either side"),
    "stats.local_networks": Key(_list_of(_string), [], "networks whose hosts get host statistics"),
    "stats.watched_hosts": Key(_list_of(_string), [], "hosts with exact statistics"),
    "stats.web.tcp_ports": Key(_list_of(_port), [80, 443, 8080, 8443], "TCP ports of web servers"),
    "stats.web.udp_ports": Key(_list_of(_port), [443], "UDP ports of web servers (QUIC)"),
    "store.path": Key(_string, "", "SQLite database (default: STATE_DIR/flowscope.db)"),
    "store.retention.1s": Key(_duration, 86_400_000, "how long 1-second results are kept"),
    "store.retention.1m": Key(_duration, 30 * 86_400_000, "how long 1-minute results are kept"),
    "store.retention.1h": Key(_duration, 365 * 86_400_000, "how long 1-hour results are kept"),
    "web.host": Key(_string, "127.0.0.1", "address of the web server (binding beyond localhost is a choice)"),
    "web.port": Key(_port, 8080, "port of the web server"),
    "web.token": Key(_string, "", "access token required by the API and pages (empty: none)"),
    "export.json_server": Key(_host_port, "", "serve flows as JSON lines over TCP on HOST:PORT"),
    "export.parquet_dir": Key(_string, "", "write flows as Parquet files here, for flowscope spark (empty: off)"),
    "export.parquet_roll_interval": Key(_duration, 1_000, "close a Parquet file at least this often"),
    "export.parquet_roll_rows": Key(_integer, 500_000, "... or once it holds this many rows"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated flat settings plus where each value came from (for error messages and docs)."""

    values: dict[str, Any]
    sources: dict[str, str]
    views: tuple[ViewSpec, ...] = ()
    extra_retention_ms: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and not any(k == key for k in KEYS):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _unknown(key: str, origin: str) -> ConfigError:
    close = difflib.get_close_matches(key, KEYS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{key}: unknown setting (from {origin}){hint}")


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: list[str] | None = None,
) -> Settings:
    values = {key: spec.default for key, spec in KEYS.items()}
    sources = dict.fromkeys(KEYS, "default")
    views: list[ViewSpec] = []
    extra_retention: dict[str, int] = {}

    def put(key: str, raw: object, origin: str) -> None:
        if key.startswith("store.retention.") and key not in KEYS:
            interval = key.removeprefix("store.retention.")
            parse_duration_ms(interval, key=key)
            try:
                extra_retention[interval] = _duration(key, raw)
            except ConfigError as error:
                raise ConfigError(f"{error} (from {origin})") from None
            return
        if key not in KEYS:
            raise _unknown(key, origin)
        try:
            values[key] = KEYS[key].convert(key, raw)
        except ConfigError as error:
            raise ConfigError(f"{error} (from {origin})") from None
        sources[key] = origin

    if path is not None:
        file = Path(path)
        try:
            document = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{file}: {error}") from None
        for index, view in enumerate(document.pop("views", [])):
            if not isinstance(view, dict) or set(view) != {"name", "filter"}:
                raise ConfigError(f"views[{index}] (from {file}): each view needs exactly 'name' and 'filter'")
            views.append(ViewSpec(_string(f"views[{index}].name", view["name"]),
                                  _string(f"views[{index}].filter", view["filter"])))
        for key, raw in _flatten(document).items():
            put(key, raw, str(file))
    env = os.environ if environ is None else environ
    by_env_name = {ENV_PREFIX + k.upper().replace(".", "_"): k for k in KEYS}
    for name, raw in env.items():
        if name.startswith(ENV_PREFIX) and name not in ("FLOWSCOPE_CONFIG",):
            if name not in by_env_name:
                raise _unknown(name.removeprefix(ENV_PREFIX).lower(), f"environment {name}")
            put(by_env_name[name], raw, f"environment {name}")
    for item in overrides or []:
        key, separator, raw = item.partition("=")
        if not separator:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        put(key.strip(), raw.strip(), f"--set {key.strip()}")
    settings = Settings(values, sources, tuple(views), extra_retention)
    build(settings)  # every cross-key rule is checked here, once
    for view in settings.views:
        compile_filter(view.filter)  # a syntax error names the view's position and expectation
    return settings


# --------------------------------------------------------------- typed configs
@dataclass(frozen=True, slots=True)
class Config:
    collect: CollectConfig
    engine: EngineConfig
    store: StoreConfig
    web_host: str
    web_port: int
    web_token: str
    json_server: str
    workers: int
    stats_path: str = ""
    parquet: ParquetWriterConfig | None = None  # export.parquet_dir set: flows also go to Parquet files


def build(settings: Settings) -> Config:
    v = settings.values
    state_dir = Path(v["engine.state_dir"])
    stats = StatsSpec(
        top_n=v["stats.top_n"],
        port_side=v["stats.port_side"],
        web=WebSpec(tuple(v["stats.web.tcp_ports"]), tuple(v["stats.web.udp_ports"])),
        local_networks=tuple(v["stats.local_networks"]),
        watched_hosts=tuple(v["stats.watched_hosts"]),
        views=settings.views,
    )
    check_resolutions(v["engine.windows"])
    engine = EngineConfig(
        windows_ms=tuple(v["engine.windows"]),
        time_base=v["engine.time_base"],
        grace_ms=v["engine.grace"],
        provisional_interval_ms=v["engine.provisional_interval"],
        checkpoint_interval_ms=v["engine.checkpoint_interval"],
        checkpoint_dir=str(state_dir / "checkpoint"),
        stats=stats,
        offload=v["engine.background"],
    )
    retention = {"1s": v["store.retention.1s"], "1m": v["store.retention.1m"], "1h": v["store.retention.1h"],
                 **settings.extra_retention_ms}
    store = StoreConfig(path=v["store.path"] or str(state_dir / "flowscope.db"), retention_ms=retention)
    collect = CollectConfig(
        udp=tuple(UdpListenerConfig(host=v["collect.host"], port=p, receive_buffer_bytes=v["collect.receive_buffer"],
                                    reuse_port=v["collect.workers"] > 0) for p in v["collect.udp_ports"]),
        tcp=tuple(TcpListenerConfig(host=v["collect.host"], port=p) for p in v["collect.tcp_ports"]),
        allowed_exporters=tuple(v["collect.allowed_exporters"]),
        decoder=DecoderConfig(
            max_templates_per_exporter=v["decode.max_templates_per_exporter"],
            pending_max_sets_per_exporter=v["decode.pending_max_sets_per_exporter"],
            pending_max_age_ms=v["decode.pending_max_age"],
        ),
        normalize=NormalizeConfig(apply_sampling=v["decode.apply_sampling"], preserve_order=False),
    )
    if v["collect.workers"] < 0:
        raise ConfigError(f"collect.workers: {v['collect.workers']} must be 0 or more")
    if v["export.parquet_roll_interval"] <= 0 or v["export.parquet_roll_rows"] <= 0:
        raise ConfigError("export.parquet_roll_interval / export.parquet_roll_rows must be positive")
    parquet = ParquetWriterConfig(v["export.parquet_dir"], roll_interval_ms=v["export.parquet_roll_interval"],
                                  roll_rows=v["export.parquet_roll_rows"]) if v["export.parquet_dir"] else None
    return Config(collect, engine, store, v["web.host"], v["web.port"], v["web.token"], v["export.json_server"],
                  v["collect.workers"], stats_path=str(state_dir / "stats.json"), parquet=parquet)


def describe() -> str:
    """Every key with its default and meaning, as a TOML document (for docs and --help)."""
    lines: list[str] = []
    section = None
    for key, spec in KEYS.items():
        table, _, name = key.rpartition(".")
        if table != section:
            lines.append(f"\n[{table}]")
            section = table
        default = spec.default
        rendered = f'"{default}"' if isinstance(default, str) else str(default).lower() if isinstance(
            default, bool) else repr(default)
        quoted = f'"{name}"' if not name.isidentifier() else name
        lines.append(f"{quoted} = {rendered}  # {spec.help}")
    return "\n".join(lines).strip() + "\n"
