"""The ``flowscope`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from flowscope import __version__
from flowscope.aggregate.windows import TIME_BASES, format_duration, parse_duration_ms
from flowscope.collect.tcp import TcpListenerConfig
from flowscope.collect.udp import UdpListenerConfig
from flowscope.config import Settings, build, load_settings
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.errors import ConfigError, FlowscopeError
from flowscope.export.flowjson import encode_flows
from flowscope.export.ipfixcol2 import Ipfixcol2Formatter, Ipfixcol2Options
from flowscope.export.jsonserver import JsonServer, JsonServerConfig
from flowscope.export.parquet import ParquetOutput, ParquetWriter, ParquetWriterConfig
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.pipeline import CollectConfig, Collector, JsonStreamOutput, Service, decode_files, offline_results
from flowscope.report import parse_time_ms, render
from flowscope.spark import add_spark_parser
from flowscope.store import ResultStore
from flowscope.tools.replay import add_replay_parser

log = logging.getLogger("flowscope")


# ----------------------------------------------------------------------------- outputs
class StdoutJson:
    """Prints every flow as one JSON line."""

    def __init__(self, stream: BinaryIO, *, padded: bool = False) -> None:
        self.stream = stream
        self.padded = padded

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None:
        if len(batch):
            self.stream.write(encode_flows(batch, exporters, padded=self.padded))
            self.stream.flush()


# ---------------------------------------------------------------------------- commands
def _summary(counters: Counters, flows: int, packets: int, octets: int, exporters: ExporterTable) -> dict:
    errors: dict[str, int] = {}
    for labels, value in counters.series("decode_errors_total"):
        errors[labels["kind"]] = errors.get(labels["kind"], 0) + value
    return {
        "flows": flows,
        "packets": packets,
        "bytes": octets,
        "datagrams": counters.total("decode_packets_total"),
        "exporters": [{"address": a, "domain": d} for a, d in exporters.entries()],
        "records": {
            "data": counters.total("decode_records_total", kind="data"),
            "options": counters.total("decode_records_total", kind="options"),
        },
        "errors": dict(sorted(errors.items())),
        "sequence_lost": counters.total("decode_sequence_lost_total"),
        "pending_dropped": counters.total("decode_pending_dropped_total"),
    }


def cmd_decode(args: argparse.Namespace) -> int:
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(NormalizeConfig(apply_sampling=not args.no_sampling), session.options, counters)
    out = sys.stdout.buffer
    flows = packets = octets = 0
    formatter = None
    if args.format == "ipfixcol2":
        formatter = Ipfixcol2Formatter(
            Ipfixcol2Options(tcp_flags=args.ipfixcol2_tcp_flags, timestamp=args.ipfixcol2_timestamp,
                             protocol=args.ipfixcol2_protocol, detailed_info=args.ipfixcol2_detailed_info),
            templates=session.templates.get,
        )
    for batch, records in decode_files(args.files, session, normalizer, exporter=args.exporter,
                                       keep_records=formatter is not None):
        flows += len(batch)
        packets += int(batch["packets"].sum())
        octets += int(batch["bytes"].sum())
        if args.summary:
            continue
        if formatter is not None:
            out.write(formatter.encode(records))
        else:
            out.write(encode_flows(batch, session.exporters))
    if args.summary:
        out.write(json.dumps(_summary(counters, flows, packets, octets, session.exporters)).encode() + b"\n")
    out.flush()
    return 0


def _listen_configs(args: argparse.Namespace) -> CollectConfig:
    udp = tuple(UdpListenerConfig(host=args.host, port=p) for p in args.udp_port)
    tcp = tuple(TcpListenerConfig(host=args.host, port=p) for p in args.tcp_port)
    return CollectConfig(
        udp=udp,
        tcp=tcp,
        allowed_exporters=tuple(args.allow or ()),
        normalize=NormalizeConfig(apply_sampling=not args.no_sampling, preserve_order=False),
    )


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def cmd_collect(args: argparse.Namespace) -> int:
    counters = Counters()
    outputs: list = []
    server = None
    if args.json_server:
        host, port = args.json_server
        server = JsonServer(JsonServerConfig(host=host, port=port), counters)
        server.start()
        outputs.append(JsonStreamOutput(server, padded=args.padded))
        print(f"flowscope: JSON flow stream on {host}:{server.bound_address[1]}", file=sys.stderr, flush=True)
    writer = None
    if args.parquet_dir:
        writer = ParquetWriter(ParquetWriterConfig(args.parquet_dir, roll_interval_ms=int(args.parquet_roll * 1000),
                                                   roll_rows=args.parquet_roll_rows), counters)
        writer.start()
        outputs.append(ParquetOutput(writer))
        print(f"flowscope: writing Parquet files to {args.parquet_dir}", file=sys.stderr, flush=True)
    if not outputs:
        outputs.append(StdoutJson(sys.stdout.buffer, padded=args.padded))
    collector = Collector(_listen_configs(args), outputs, counters)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    collector.start()
    ports = ", ".join(
        [f"udp {listener.bound_address[1]}" for listener in collector.udp_listeners]
        + [f"tcp {listener.bound_address[1]}" for listener in collector.tcp_listeners]
    )
    print(f"flowscope: collecting on {ports}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        collector.stop()
        if server is not None:
            server.stop()
        if writer is not None:
            writer.stop()
        if args.stats:
            print(json.dumps(counters.snapshot()), file=sys.stderr)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config or os.environ.get("FLOWSCOPE_CONFIG")
    return load_settings(path, overrides=args.set)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.show:
        for key, value in settings.values.items():
            print(f"{key} = {value!r}  ({settings.sources[key]})")
    else:
        print(f"flowscope: configuration OK ({args.config or 'defaults'})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = build(_settings(args))
    counters = Counters()
    service = Service(config, counters)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    service.start()
    assert service.collector is not None
    ports = ", ".join(
        [f"udp {port}" for port in service.udp_ports()]
        + [f"tcp {listener.bound_address[1]}" for listener in service.collector.tcp_listeners]
    )
    workers = f" with {config.workers} worker processes" if config.workers else ""
    print(f"flowscope: collecting on {ports}{workers}; results in {config.store.path}", file=sys.stderr, flush=True)
    if service.web is not None:
        print(f"flowscope: dashboard on {service.web.url}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    settings = _settings(args)
    config = build(settings)
    interval_ms = parse_duration_ms(args.interval, key="--interval")
    if args.input:
        engine_config = replace(config.engine, grace_ms=parse_duration_ms(args.grace, key="--grace"))
        if args.time_base:
            engine_config = replace(engine_config, time_base=args.time_base)
        if interval_ms not in engine_config.windows_ms:
            engine_config = replace(engine_config, windows_ms=tuple(sorted({*engine_config.windows_ms, interval_ms})))
        if args.engine == "spark":
            from flowscope.spark.job import run_spark_report  # noqa: PLC0415  (pyspark is an optional extra)

            results = run_spark_report(args.input, engine_config, interval_ms=interval_ms, view=args.view)
        else:
            results = [r.to_json() for r in offline_results(args.input, engine_config)
                       if r.duration_ms == interval_ms and r.view == args.view]
    else:
        store = ResultStore(config.store)
        if not Path(config.store.path).exists():
            raise ConfigError(f"store.path: {config.store.path} does not exist yet (has flowscope run run?)")
        store.start()
        try:
            name = format_duration(interval_ms)
            if args.at:
                at_ms = parse_time_ms(args.at)
                found = store.at(name, at_ms - at_ms % interval_ms, view=args.view)
                results = [found] if found else []
            else:
                latest = store.latest(name, view=args.view, final_only=not args.provisional)
                results = [latest] if latest else []
        finally:
            store.stop()
    if args.json:
        sys.stdout.write(json.dumps(results if args.input else (results[0] if results else None), indent=1) + "\n")
    elif not results:
        print("flowscope: no report for that interval and time", file=sys.stderr)
        return 1
    else:
        sys.stdout.write("\n".join(render(r, by=args.by) for r in results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(prog="flowscope", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"flowscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    decode = commands.add_parser("decode", parents=[common],
                                 help="decode capture files and print one JSON object per flow")
    decode.add_argument("files", nargs="+", help="pcap/pcapng, RFC 5655 IPFIX files, raw datagram files")
    decode.add_argument("--summary", action="store_true", help="print only the totals, as one JSON object")
    decode.add_argument("--format", choices=["flowscope", "ipfixcol2"], default="flowscope")
    decode.add_argument("--no-sampling", action="store_true", help="do not scale by the sampling rate")
    decode.add_argument("--exporter", default="0.0.0.0", help="exporter address for files without one")
    decode.add_argument("--ipfixcol2-tcp-flags", choices=["formatted", "raw"], default="formatted",
                        help='with --format ipfixcol2: TCP flags as ".AP.S." or as a number')
    decode.add_argument("--ipfixcol2-timestamp", choices=["formatted", "unix"], default="formatted",
                        help="with --format ipfixcol2: ISO 8601 UTC milliseconds or Unix milliseconds")
    decode.add_argument("--ipfixcol2-protocol", choices=["formatted", "raw"], default="formatted",
                        help='with --format ipfixcol2: protocol as its name ("TCP") or as a number')
    decode.add_argument("--ipfixcol2-detailed-info", action="store_true",
                        help="with --format ipfixcol2: add the ipfix:* message details to every record")
    decode.set_defaults(handler=cmd_decode)

    collect = commands.add_parser("collect", parents=[common],
                                  help="listen for exports and print or serve decoded flows")
    collect.add_argument("--host", default="0.0.0.0", help="address to bind (:: for IPv6 and IPv4)")
    collect.add_argument("--udp-port", type=int, action="append", help="UDP port (repeatable)")
    collect.add_argument("--tcp-port", type=int, action="append", help="IPFIX-over-TCP port (repeatable)")
    collect.add_argument("--allow", action="append", help="accept exporters from this network only")
    collect.add_argument("--json-server", type=_host_port, metavar="HOST:PORT",
                         help="serve the flows as JSON lines over TCP instead of printing them")
    collect.add_argument("--parquet-dir", metavar="DIR",
                         help="write the flows as Parquet files into DIR (for flowscope spark --parquet-source)")
    collect.add_argument("--parquet-roll", type=float, default=1.0, metavar="S",
                         help="with --parquet-dir: close a file at least every S seconds")
    collect.add_argument("--parquet-roll-rows", type=int, default=500_000, metavar="N",
                         help="with --parquet-dir: ... or once it holds N rows")
    collect.add_argument("--padded", action="store_true",
                         help="fixed-width JSON lines (blanks between tokens): faster to produce")
    collect.add_argument("--no-sampling", action="store_true")
    collect.add_argument("--stats", action="store_true", help="print all counters to stderr on exit")
    collect.set_defaults(handler=cmd_collect)
    add_replay_parser(commands, parents=[common])

    configured = argparse.ArgumentParser(add_help=False)
    configured.add_argument("--config", help="TOML configuration file (also FLOWSCOPE_CONFIG)")
    configured.add_argument("--set", action="append", metavar="KEY=VALUE",
                            help="override one setting, e.g. engine.time_base=end (repeatable)")

    run = commands.add_parser("run", parents=[common, configured],
                              help="collect, compute statistics and store them, in one process")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check-config", parents=[common, configured], help="validate a configuration")
    check.add_argument("--show", action="store_true", help="print every setting and where it came from")
    check.set_defaults(handler=cmd_check_config)

    report = commands.add_parser("report", parents=[common, configured],
                                 help="print a finished report from the store, or from capture files")
    report.add_argument("--interval", default="1m", help="report length: 1m, 1h (or any configured window)")
    report.add_argument("--at", help="a time inside the wanted window (UTC, ISO 8601 or epoch ms); default latest")
    report.add_argument("--view", default="all")
    report.add_argument("--by", choices=["flows", "packets", "bytes"], default="flows", help="rank top lists by")
    report.add_argument("--json", action="store_true", help="print the report as JSON (docs/report-schema.md)")
    report.add_argument("--provisional", action="store_true", help="also show a window that is still open")
    report.add_argument("--input", nargs="+", metavar="CAPTURE",
                        help="compute reports from capture files instead of reading the store")
    report.add_argument("--time-base", choices=list(TIME_BASES), help="with --input: override engine.time_base")
    report.add_argument("--grace", default="5m", help="with --input: how far flows may arrive out of order")
    report.add_argument("--engine", choices=["embedded", "spark"], default="embedded",
                        help="with --input: compute on the embedded engine or on Apache Spark")
    report.set_defaults(handler=cmd_report)
    add_spark_parser(commands, parents=[common, configured])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if getattr(args, "udp_port", None) is None and args.command == "collect":
        args.udp_port = [2055, 4739]
    if getattr(args, "tcp_port", None) is None and args.command == "collect":
        args.tcp_port = [4739]
    try:
        code: int = args.handler(args)
        return code
    except FlowscopeError as error:
        print(f"flowscope: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"flowscope: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
