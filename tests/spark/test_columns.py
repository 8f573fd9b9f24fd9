"""The filter syntax tree as a Spark column selects exactly the flows the numpy mask selects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.filters import compile_filter
from flowscope.model import addresses_text
from flowscope.spark.columns import filter_column
from flowscope.spark.sources import FLOW_SCHEMA, flow_table, write_parquet
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

pytestmark = pytest.mark.spark

NOW_MS = 1_795_786_800_000


def test_every_node_kind_matches_the_numpy_mask(spark: SparkSession, tmp_path: Path) -> None:
    batch = TrafficGenerator(GeneratorConfig(seed=3, local_hosts=50, remote_hosts=300, ipv6_share=0.3,
                                             icmp_share=0.05, other_protocol_share=0.05)).flows(3_000, NOW_MS)
    batch["packets"][:5] = np.uint64((1 << 63) + 5)  # beyond a signed long: compares as unsigned
    sources = addresses_text(batch["src_addr"][:12])
    v6 = next(a for a in addresses_text(batch["dst_addr"]) if ":" in a)
    filters = [
        "", "any", "proto tcp", "not proto udp", "proto icmp or proto icmp6", "port 443", "src port > 1024",
        "dst port < 1024 and not dst port 80", "dst port in [22 25 53 80 110 143 443 8080 8443]",
        "src port in [443 80]", "flags S and not flags AFRPU", "flags SA", "flags > 16", "tos 0", "tos > 0",
        "net 10.0.0.0/8", "net 10.0.3.0/25", "src net 10.0.0.0 255.255.252.0", "src net fd00:10::/64",
        "dst net 2001:db8::/33", "net 2001:db8:0:0:8000::/65", f"host {sources[0]}", f"dst host {v6}",
        f"host in [{' '.join(sources)}]", "ipv4", "ipv6", "bytes > 200", "packets >= 2",
        "packets > 9223372036854775807", "packets < 18446744073709551615", "bytes <= 0", "in if 1",
        "out if 5", "if 2", "src as 64512", "dst as > 0", "as in [64512 0]", "net 0.0.0.0/0", "net ::/0",
        "not (proto tcp and (port 443 or port 80)) or host 10.0.0.1",
    ]
    write_parquet([flow_table(batch, np.zeros(len(batch), np.int64), np.zeros(len(batch), np.bool_))], tmp_path)
    flows = spark.read.schema(FLOW_SCHEMA).parquet(str(tmp_path))
    selected = flows.select(
        "time_start", "src_addr", "dst_addr", "src_port", "dst_port", "protocol",
        *(filter_column(text).alias(f"f{i}") for i, text in enumerate(filters)),
    ).collect()
    assert len(selected) == len(batch)
    # Parquet keeps the row order of the one file written; check that it did.
    assert [bytes(r["src_addr"]) for r in selected] == [a.ljust(16, b"\0") for a in batch["src_addr"].tolist()]
    matched = 0
    for i, text in enumerate(filters):
        expected = compile_filter(text).mask(batch)
        actual = np.array([row[f"f{i}"] for row in selected], np.bool_)
        assert np.array_equal(actual, expected), f"{text!r}: spark {actual.sum()} flows, numpy {expected.sum()}"
        matched += 0 < int(expected.sum()) < len(batch)
    assert matched >= 30  # most filters select a real subset, not nothing or everything
