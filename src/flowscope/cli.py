"""The ``flowscope`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import BinaryIO

from flowscope import __version__
from flowscope.collect.tcp import TcpListenerConfig
from flowscope.collect.udp import UdpListenerConfig
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.errors import FlowscopeError
from flowscope.export.flowjson import encode_flows
from flowscope.export.jsonserver import JsonServer, JsonServerConfig
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.pipeline import CollectConfig, Collector, decode_files

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


class JsonStreamOutput:
    def __init__(self, server: JsonServer, *, padded: bool) -> None:
        self.server = server
        self.padded = padded

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None:
        if len(batch) and self.server.client_count:
            self.server.publish(encode_flows(batch, exporters, padded=self.padded), len(batch))


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
        from flowscope.export.ipfixcol2 import Ipfixcol2Formatter

        formatter = Ipfixcol2Formatter()
    for batch, records in decode_files(args.files, session, normalizer, exporter=args.exporter):
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
    else:
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
        if args.stats:
            print(json.dumps(counters.snapshot()), file=sys.stderr)
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
    decode.set_defaults(handler=cmd_decode)

    collect = commands.add_parser("collect", parents=[common],
                                  help="listen for exports and print or serve decoded flows")
    collect.add_argument("--host", default="0.0.0.0", help="address to bind (:: for IPv6 and IPv4)")
    collect.add_argument("--udp-port", type=int, action="append", help="UDP port (repeatable)")
    collect.add_argument("--tcp-port", type=int, action="append", help="IPFIX-over-TCP port (repeatable)")
    collect.add_argument("--allow", action="append", help="accept exporters from this network only")
    collect.add_argument("--json-server", type=_host_port, metavar="HOST:PORT",
                         help="serve the flows as JSON lines over TCP instead of printing them")
    collect.add_argument("--padded", action="store_true",
                         help="fixed-width JSON lines (blanks between tokens): faster to produce")
    collect.add_argument("--no-sampling", action="store_true")
    collect.add_argument("--stats", action="store_true", help="print all counters to stderr on exit")
    collect.set_defaults(handler=cmd_collect)
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
