"""Templates: parsed once, compiled once into a numpy dtype, stored per exporter scope.

A template is keyed by (exporter address, observation domain / source id, template id, version),
so two exporters that both use template 256 never mix, nor do the NetFlow v9 and the IPFIX
templates of one host (a v9 source id and an IPFIX observation domain are separate namespaces).
The store is bounded per exporter: a flood of templates cannot exhaust memory, it gets counted
instead.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

VARIABLE_LENGTH = 0xFFFF

# Big-endian numpy formats for the field lengths that map onto one machine integer.
_INTEGER_FORMATS = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field specifier of a template: element (enterprise number, id) and its length."""

    pen: int
    element_id: int
    length: int

    @property
    def is_variable(self) -> bool:
        return self.length == VARIABLE_LENGTH


@dataclass(slots=True, eq=False)
class Template:
    """A data or options template, compiled for decoding whole data sets at once."""

    template_id: int
    fields: tuple[FieldSpec, ...]
    scope_count: int = 0  # number of leading scope fields; > 0 or is_options for options templates
    is_options: bool = False
    # Compiled form, filled by ``compile_template``:
    fixed_dtype: np.dtype = field(default_factory=lambda: np.dtype([]))
    fixed_length: int = 0  # bytes of the fixed-length fields of one record
    fixed_index: tuple[int, ...] = ()  # field positions in fixed_dtype order
    variable_index: tuple[int, ...] = ()  # positions of variable-length fields
    # Cached per-template plans of later stages (normalize, layout_number), keyed by name.
    plans: dict[str, Any] = field(default_factory=dict)

    @property
    def is_variable(self) -> bool:
        return bool(self.variable_index)

    @property
    def min_record_length(self) -> int:
        """Smallest possible record: fixed part plus one length byte per variable field."""
        return self.fixed_length + len(self.variable_index)

    def same_layout(self, other: Template) -> bool:
        return (
            self.fields == other.fields
            and self.scope_count == other.scope_count
            and self.is_options == other.is_options
        )

    def field_position(self, pen: int, element_id: int) -> int | None:
        """Position of the first field carrying this element (None if the template lacks it)."""
        for position, spec in enumerate(self.fields):
            if spec.element_id == element_id and spec.pen == pen and spec.length != 0:
                return position
        return None


def field_name(position: int) -> str:
    return f"f{position}"


# A number per field list seen (see layout_number), bounded.
_LAYOUTS: dict[tuple[FieldSpec, ...], int] = {}
_LAYOUTS_MAX = 1 << 16
_LAYOUT_NUMBERS = itertools.count()


def layout_number(template: Template) -> int:
    """Equal for templates of equal fields (so of equal record dtypes), kept in ``template.plans``:
    comparing the field lists or dtypes themselves costs 1-4 µs each time."""
    number = template.plans.get("layout")
    if isinstance(number, int):
        return number
    number = _LAYOUTS.get(template.fields)
    if number is None:
        if len(_LAYOUTS) >= _LAYOUTS_MAX:
            _LAYOUTS.clear()  # numbers are never reused: older templates just stop matching newer ones
        number = _LAYOUTS[template.fields] = next(_LAYOUT_NUMBERS)
    template.plans["layout"] = number
    return number


def compile_template(template: Template) -> Template:
    """Build the numpy dtype that decodes the fixed-length part of a record in one call.

    Lengths 1/2/4/8 become big-endian unsigned integers; other lengths become byte sub-arrays that
    the value layer interprets by element type. Zero-length fields take no space and are kept out
    of the dtype.
    """
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    fixed_index: list[int] = []
    variable_index: list[int] = []
    offset = 0
    for position, spec in enumerate(template.fields):
        if spec.is_variable:
            variable_index.append(position)
            continue
        if spec.length == 0:
            continue
        names.append(field_name(position))
        formats.append(_INTEGER_FORMATS.get(spec.length, ("u1", (spec.length,))))
        offsets.append(offset)
        fixed_index.append(position)
        offset += spec.length
    template.fixed_dtype = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": offset}
    )
    template.fixed_length = offset
    template.fixed_index = tuple(fixed_index)
    template.variable_index = tuple(variable_index)
    return template


IPFIX_VERSION = 10


class TemplateKey(NamedTuple):
    exporter: str
    domain: int
    template_id: int
    version: int = IPFIX_VERSION  # 9: NetFlow v9 (source id), 10: IPFIX (observation domain)


@dataclass(slots=True)
class StoreResult:
    accepted: bool
    refreshed: bool = False  # same layout announced again
    changed: bool = False  # same id, new layout
    reason: str = ""


class TemplateStore:
    """Templates per (exporter, domain, id, version), bounded per exporter."""

    def __init__(self, max_templates_per_exporter: int = 4096) -> None:
        self.max_templates_per_exporter = max_templates_per_exporter
        self._templates: dict[tuple[str, int, int, int], Template] = {}
        self._per_exporter: dict[str, int] = {}
        self.generation = 0  # moves whenever a stored template changes (for caches of lookups)

    def get(self, exporter: str, domain: int, template_id: int, version: int | None = None) -> Template | None:
        """The template of one scope; without ``version``, the IPFIX one, else the NetFlow v9 one."""
        if version is not None:
            return self._templates.get((exporter, domain, template_id, version))
        found = self._templates.get((exporter, domain, template_id, IPFIX_VERSION))
        if found is None:
            found = self._templates.get((exporter, domain, template_id, 9))
        return found

    def put(self, exporter: str, domain: int, template: Template, version: int = IPFIX_VERSION) -> StoreResult:
        key = TemplateKey(exporter, domain, template.template_id, version)
        existing = self._templates.get(key)
        if existing is not None:
            if existing.same_layout(template):
                return StoreResult(accepted=True, refreshed=True)
            self._templates[key] = compile_template(template)
            self.generation += 1
            return StoreResult(accepted=True, changed=True)
        count = self._per_exporter.get(exporter, 0)
        if count >= self.max_templates_per_exporter:
            return StoreResult(accepted=False, reason="template_limit")
        self._templates[key] = compile_template(template)
        self._per_exporter[exporter] = count + 1
        self.generation += 1
        return StoreResult(accepted=True)

    def withdraw(self, exporter: str, domain: int, template_id: int, version: int = IPFIX_VERSION) -> bool:
        removed = self._templates.pop(TemplateKey(exporter, domain, template_id, version), None)
        if removed is not None:
            self._per_exporter[exporter] -= 1
            self.generation += 1
        return removed is not None

    def withdraw_all(self, exporter: str, domain: int, *, options: bool, version: int = IPFIX_VERSION) -> int:
        keys = [
            k
            for k, t in self._templates.items()
            if k[0] == exporter and k[1] == domain and k[3] == version and t.is_options == options
        ]
        for key in keys:
            self.withdraw(*key)
        return len(keys)

    def templates_of(self, exporter: str | None = None) -> list[tuple[TemplateKey, Template]]:
        return [(TemplateKey(*k), t) for k, t in self._templates.items() if exporter is None or k[0] == exporter]

    def __len__(self) -> int:
        return len(self._templates)
