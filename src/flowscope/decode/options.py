"""What options data tells about an exporter: sampling rates, system init time, interface names.

Options records (v9 options templates, IPFIX options templates) are decoded like any data; this
module keeps the facts the normalize stage needs, per (exporter, domain).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowscope.decode.records import RecordSet
from flowscope.decode.v9 import V9_SCOPE_PEN

# IANA element ids used here.
SAMPLING_INTERVAL = 34
SAMPLER_ID = 48
SAMPLER_RANDOM_INTERVAL = 50
SELECTOR_ID = 302
SAMPLING_PACKET_INTERVAL = 305
SAMPLING_PACKET_SPACE = 306
SAMPLING_SIZE = 309
SAMPLING_POPULATION = 310
SYSTEM_INIT_TIME_MS = 160
INGRESS_INTERFACE = 10
INTERFACE_NAME = 82
INTERFACE_DESCRIPTION = 83
V9_SCOPE_INTERFACE = 2


def _integer_position(records: RecordSet, element: int, pen: int = 0) -> int | None:
    """Position of a fixed-length field carrying ``element``, readable as an unsigned integer.

    A variable-length field (length 65535) has no integer column: it is treated as absent.
    """
    position = records.template.field_position(pen, element)
    if position is None or records.template.fields[position].is_variable:
        return None
    return position


def sampling_rates(records: RecordSet) -> np.ndarray | None:
    """The 1-in-N rate each record announces by itself, or None if it announces none.

    Recognised: samplingInterval (34), samplerRandomInterval (50), samplingPacketInterval and
    samplingPacketSpace (305/306: N = (interval + space) / interval), samplingSize and
    samplingPopulation (309/310: N = population / size). A rate of 0 means "unknown" here.
    """
    for element in (SAMPLING_INTERVAL, SAMPLER_RANDOM_INTERVAL):
        position = _integer_position(records, element)
        if position is not None:
            return records.unsigned(position)
    interval = _integer_position(records, SAMPLING_PACKET_INTERVAL)
    space = _integer_position(records, SAMPLING_PACKET_SPACE)
    if interval is not None and space is not None:
        selected = records.unsigned(interval)
        skipped = records.unsigned(space)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(selected > 0, (selected + skipped) // np.maximum(selected, 1), 0)
        return rate.astype(np.uint64)
    size = _integer_position(records, SAMPLING_SIZE)
    population = _integer_position(records, SAMPLING_POPULATION)
    if size is not None and population is not None:
        chosen = records.unsigned(size)
        total = records.unsigned(population)
        return np.where(chosen > 0, total // np.maximum(chosen, 1), 0).astype(np.uint64)
    return None


def sampler_ids(records: RecordSet) -> np.ndarray | None:
    for element in (SELECTOR_ID, SAMPLER_ID):
        position = _integer_position(records, element)
        if position is not None:
            return records.unsigned(position)
    return None


@dataclass(slots=True)
class ExporterOptions:
    default_sampling_rate: int = 0  # 0 = none announced
    sampling_by_id: dict[int, int] = field(default_factory=dict)
    system_init_ms: int | None = None
    interface_names: dict[int, str] = field(default_factory=dict)


class OptionsState:
    """Facts learned from options data, per (exporter, domain)."""

    def __init__(self) -> None:
        self._by_scope: dict[tuple[str, int], ExporterOptions] = {}

    def get(self, exporter: str, domain: int) -> ExporterOptions | None:
        return self._by_scope.get((exporter, domain))

    def snapshot(self, exporter: str, domain: int) -> ExporterOptions | None:
        """A copy that later options data will not change (what earlier records were sent under)."""
        state = self._by_scope.get((exporter, domain))
        if state is None:
            return None
        return ExporterOptions(state.default_sampling_rate, dict(state.sampling_by_id), state.system_init_ms,
                               dict(state.interface_names))

    def scopes(self) -> dict[tuple[str, int], ExporterOptions]:
        return dict(self._by_scope)

    def learn(self, records: RecordSet) -> None:
        """Update from one options record set (a few records: a Python loop is fine here)."""
        state = self._by_scope.setdefault((records.exporter, records.domain), ExporterOptions())
        template = records.template
        rates = sampling_rates(records)
        if rates is not None:
            ids = sampler_ids(records)
            if ids is None:
                nonzero = rates[rates > 0]
                if len(nonzero):
                    state.default_sampling_rate = int(nonzero[-1])
            else:
                for sampler, rate in zip(ids.tolist(), rates.tolist(), strict=True):
                    if rate > 0:
                        state.sampling_by_id[sampler] = rate
        init = _integer_position(records, SYSTEM_INIT_TIME_MS)
        if init is not None and len(records):
            # as a signed 64-bit number, like the record's own field in normalize: an absurd 8-byte
            # value must not overflow the int64 time arithmetic later
            state.system_init_ms = int(records.unsigned(init).astype(np.int64)[-1])
        name_position = template.field_position(0, INTERFACE_NAME)
        if name_position is None:
            name_position = template.field_position(0, INTERFACE_DESCRIPTION)
        if_position = _integer_position(records, INGRESS_INTERFACE)
        if if_position is None:
            if_position = _integer_position(records, V9_SCOPE_INTERFACE, V9_SCOPE_PEN)
        if name_position is not None and if_position is not None:
            names = records.values(name_position)
            for index, raw in zip(records.unsigned(if_position).tolist(), names, strict=True):
                state.interface_names[index] = raw.rstrip(b"\x00").decode("utf-8", "replace")
