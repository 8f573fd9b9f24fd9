"""`flowscope decode --format ipfixcol2` as a real process on a real capture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLE_FLOWS = DATA / "ipfixcol2" / "example_flows.ipfix"
FLOWSCOPE = [sys.executable, "-m", "flowscope.cli"]


def decode(*args: str) -> list[bytes]:
    done = subprocess.run([*FLOWSCOPE, "decode", "--format", "ipfixcol2", *args], capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.endswith(b"\n")
    return done.stdout.splitlines()


def test_example_flows_prints_one_valid_json_object_per_record() -> None:
    lines = decode(str(EXAMPLE_FLOWS))
    assert len(lines) == 3979
    records = [json.loads(line) for line in lines]
    assert all(record["@type"] == "ipfix.entry" for record in records)
    assert records[0]["iana:octetDeltaCount"] == 194
    assert records[0]["iana:flowStartMilliseconds"] == "2015-08-03T12:11:29.586Z"
    assert records[0]["iana:protocolIdentifier"] == "UDP"
    # Templates 256-261 carry either IPv4 or IPv6 addresses, never both.
    assert all(("iana:sourceIPv4Address" in r) != ("iana:sourceIPv6Address" in r) for r in records)
    assert sum("iana:sourceIPv6Address" in r for r in records) == 16 + 4  # data sets 258 and 261 (IPv6)


def test_formatting_flags_reach_the_formatter() -> None:
    lines = decode(str(EXAMPLE_FLOWS), "--ipfixcol2-tcp-flags", "raw", "--ipfixcol2-timestamp", "unix",
                   "--ipfixcol2-protocol", "raw", "--ipfixcol2-detailed-info")
    first = json.loads(lines[0])
    assert first["iana:flowStartMilliseconds"] == 1_438_603_889_586
    assert first["iana:protocolIdentifier"] == 17
    assert (first["ipfix:exportTime"], first["ipfix:odid"], first["ipfix:templateId"]) == (1438603921, 6, 256)
    flags = [json.loads(line)["iana:tcpControlBits"] for line in lines if b"tcpControlBits" in line]
    assert flags and all(isinstance(value, int) for value in flags)


@pytest.mark.peer
def test_every_record_agrees_with_tshark() -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is required for the peer tests (Debian/Ubuntu: apt-get install tshark)")
    fields = ["cflow.octets", "cflow.packets", "cflow.protocol"]
    done = subprocess.run(
        [tshark, "-r", str(EXAMPLE_FLOWS), "-T", "fields", *(a for f in fields for a in ("-e", f)),
         "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=;"],
        capture_output=True, timeout=120, check=True,
    )
    columns: list[list[int]] = [[] for _ in fields]
    for frame in done.stdout.decode().splitlines():
        for column, text in zip(columns, frame.split(";"), strict=True):
            column.extend(int(value) for value in text.split(",") if value)
    ours = [json.loads(line) for line in decode(str(EXAMPLE_FLOWS), "--ipfixcol2-protocol", "raw")]
    assert len(columns[0]) == len(ours) == 3979
    assert [r["iana:octetDeltaCount"] for r in ours] == columns[0]
    assert [r["iana:packetDeltaCount"] for r in ours] == columns[1]
    assert [r["iana:protocolIdentifier"] for r in ours] == columns[2]
