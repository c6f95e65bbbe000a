"""What every cron job shares: Workday's column quirks, alias handling, and the mapping loop.

An entry model's fields are named by *our* column names (DESIGN.md "The four cron jobs").
A report may call a column something else; `CronConfig.columns` maps our name to the
report's alias, and errors name the column as the report calls it.

Workday quirks accepted everywhere: booleans as "0"/"1"; amounts as numbers or numeric
strings; dates as YYYY-MM-DD, optionally with an offset; multi-valued fields "; "-joined;
related rows as `<Name>_group` arrays; a missing field, `null` and a blank string alike.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from raasctl.codes import ErrorCode
from raasctl.dates import parse_workday_date
from raasctl.envelope import canonical_json, entry_key, is_valid_unicode
from raasctl.errors import ConfigError
from raasctl.sources.base import Unreadable

# ---------------------------------------------------------------- column types


def _text(value: Any) -> Any:
    """Numbers become text (ids are sometimes numeric); surrounding blanks are dropped."""
    if isinstance(value, bool):
        return value  # let the field reject it: True is not an id
    if isinstance(value, int | Decimal | float):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return value


def _amount(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("not an amount")
    if isinstance(value, float):
        return Decimal(repr(value))  # 12.1 stays 12.1, not its binary expansion
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not an amount: {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"not an amount: {value!r}")
        return number
    return value


def _date(value: Any) -> Any:
    if isinstance(value, str):
        return parse_workday_date(value)
    return value


_TRUE = {"1", "true", "y", "yes"}
_FALSE = {"0", "false", "n", "no"}


def _flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f'not a Workday boolean ("0" or "1"): {value!r}')


def _multi(value: Any) -> Any:
    """`"INV-1; INV-2"` (or a JSON list) → ["INV-1", "INV-2"]."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    if isinstance(value, list):
        return [_text(item) for item in value if _text(item) not in (None, "")]
    return value


RecordId = Annotated[str, BeforeValidator(_text)]
Text = Annotated[str | None, BeforeValidator(_text)]
Amount = Annotated[Decimal | None, BeforeValidator(_amount)]
Day = Annotated[date | None, BeforeValidator(_date)]
Flag = Annotated[bool, BeforeValidator(_flag)]
MultiValue = Annotated[list[str], BeforeValidator(_multi)]


class EntryModel(BaseModel):
    """A report entry (or a group row) after aliases are applied. Unknown columns are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Payload(BaseModel):
    """What a message carries; field names are a contract with the sinks."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class MappedPayload:
    entity_id: str  # the message group: updates to one record stay in order
    payload: dict[str, Any]
    key: str  # envelope.entry_key(cron, entity_id, payload)
    # canonical_json(payload), written once: the key hashes it and the message body holds it.
    payload_json: str


class EntryInvalid(Exception):
    """An entry that failed validation: counted as invalid, the run goes on."""

    code = ErrorCode.ENTRY_INVALID

    def __init__(self, position: int, field: str | None, reason: str) -> None:
        self.position = position  # 1-based entry number in the report
        self.field = field  # the column at fault, as the report names it
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"entry {self.position}: {where}{self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.position, self.field, self.reason))


# ---------------------------------------------------------------- aliases


def _row_model(annotation: Any) -> type[EntryModel] | None:
    """The row model of a `<Name>_group` field (`list[Row]`, maybe inside Annotated)."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _row_model(arg)
            if found is not None:
                return found
        return None
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, EntryModel):
            return item
    return None


@functools.cache
def _fields(model: type[EntryModel]) -> tuple[tuple[str, type[EntryModel] | None], ...]:
    """(name, row model of a group field or None) per field, worked out once per model:
    this runs for every entry of every report."""
    return tuple((name, _row_model(field.annotation)) for name, field in model.model_fields.items())


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def apply_aliases(
    raw: Mapping[str, Any], model: type[EntryModel], columns: Mapping[str, str]
) -> dict[str, Any]:
    """The entry under our column names; null and blank values dropped (missing alike)."""
    renamed: dict[str, Any] = {}
    for name, rows in _fields(model):
        alias = columns.get(name, name)
        if alias not in raw or _is_blank(raw[alias]):
            continue
        value = raw[alias]
        if rows is not None:
            if isinstance(value, Mapping):
                value = [value]  # a lone related row, written without its array
            if isinstance(value, list):
                value = [
                    apply_aliases(row, rows, columns) if isinstance(row, Mapping) else row
                    for row in value
                ]
        renamed[name] = value
    return renamed


def column_names(model: type[EntryModel]) -> set[str]:
    """Every column a model reads, group rows included: the keys `columns` may map."""
    names: set[str] = set()
    for name, rows in _fields(model):
        names.add(name)
        if rows is not None:
            names |= column_names(rows)
    return names


def _invalid(exc: ValidationError, position: int, columns: Mapping[str, str]) -> EntryInvalid:
    """The first error, named as the report names the column."""
    errors = exc.errors()
    first = errors[0]
    loc = [part for part in first["loc"] if isinstance(part, str | int)]
    names = [part for part in loc if isinstance(part, str)]
    field = columns.get(names[-1], names[-1]) if names else None
    if first["type"] == "missing":
        reason = "field required"
    else:
        reason = first["msg"].removeprefix("Value error, ")
        if "got" not in reason and first["type"] != "value_error":
            reason += f" (got {_short(first.get('input'))})"
    # A group row's error says which row: "Supplier_Invoices_group row 2".
    if len(loc) >= 3 and isinstance(loc[0], str) and isinstance(loc[1], int):
        reason += f" in {columns.get(loc[0], loc[0])} row {loc[1] + 1}"
    if len(errors) > 1:
        reason += f" (+{len(errors) - 1} more)"
    return EntryInvalid(position, field, reason)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- jobs


class Job:
    """One cron: its report, its entry model, and how an entry becomes payloads."""

    name: ClassVar[str]
    report: ClassVar[str]  # the built-in report name; config may override it
    entry_model: ClassVar[type[EntryModel]]

    def payloads(self, entry: Any) -> list[tuple[str, Payload]]:
        """(entity id, payload) for each message an entry yields."""
        raise NotImplementedError

    @property
    def columns(self) -> set[str]:
        return column_names(self.entry_model)

    def check_columns(self, columns: Mapping[str, str]) -> None:
        """ConfigError when `columns` maps a name this job does not have."""
        unknown = sorted(set(columns) - self.columns)
        if unknown:
            raise ConfigError(
                f"crons.{self.name}.columns: unknown column {unknown[0]!r} "
                f"(known: {', '.join(sorted(self.columns))})"
            )

    def parse_entry(
        self,
        raw: Mapping[str, Any] | Unreadable,
        position: int,
        columns: Mapping[str, str] | None = None,
    ) -> EntryModel:
        columns = columns or {}
        if isinstance(raw, Unreadable):
            raise EntryInvalid(position, None, raw.reason)
        if not isinstance(raw, Mapping):
            raise EntryInvalid(position, None, f"entry is not an object ({type(raw).__name__})")
        try:
            return self.entry_model.model_validate(apply_aliases(raw, self.entry_model, columns))
        except ValidationError as exc:
            raise _invalid(exc, position, columns) from None

    def map_entry(
        self,
        raw: Mapping[str, Any] | Unreadable,
        position: int,
        columns: Mapping[str, str] | None = None,
    ) -> list[MappedPayload]:
        """The payloads of one report entry; EntryInvalid if it does not validate."""
        entry = self.parse_entry(raw, position, columns)
        mapped = []
        for entity_id, payload in self.payloads(entry):
            body = payload.model_dump(mode="json")
            body_json = canonical_json(body)
            if not is_valid_unicode(body_json):
                raise EntryInvalid(position, None, "entry has text that is not valid Unicode")
            key = entry_key(self.name, entity_id, body, payload_json=body_json)
            mapped.append(MappedPayload(entity_id, body, key, body_json))
        return mapped


def map_report(
    job: Job,
    entries: Iterable[Mapping[str, Any] | Unreadable],
    columns: Mapping[str, str] | None = None,
) -> Iterator[MappedPayload | EntryInvalid]:
    """Every payload of a report, lazily; an invalid entry yields a marker and the rest go on.

    Unknown aliases in `columns` raise ConfigError at once, before any entry is read.
    """
    columns = dict(columns or {})
    job.check_columns(columns)
    return _map_report(job, entries, columns)


def _map_report(
    job: Job, entries: Iterable[Mapping[str, Any] | Unreadable], columns: Mapping[str, str]
) -> Iterator[MappedPayload | EntryInvalid]:
    for position, raw in enumerate(entries, start=1):
        try:
            yield from job.map_entry(raw, position, columns)
        except EntryInvalid as invalid:
            yield invalid
