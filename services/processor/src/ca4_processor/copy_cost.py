"""What pydantic's errors would hold while refusing a report, estimated before it validates it.

Each pydantic error keeps its own Python copy of the input it names, and an object that lacks
required fields is copied once per missing field, with everything under it: a value under a MIG
slice of a report that lacks everything else is copied twelve times. Every unknown key is an
error of its own too. A key holder's body of such shapes held 32-48 times its weight while it
was refused, over the processor's memory limit at the weight limit. A valid report lacks no
field and has no unknown key, so it costs nothing here; this walks a large body's plain JSON
decoding along the contract's models and estimates what those errors would hold, so the caller
can refuse a report before pydantic makes them.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

from pydantic import BaseModel

CHECK_ABOVE_WEIGHT: Final = 2 * 1024 * 1024
"""Bodies weighing more (``ca4_processor.body.body_weight``) are walked first; below it the
worst shape measured holds under 100 MB while refused."""
MAX_ERROR_BYTES: Final = 64 * 1024 * 1024
"""Most bytes pydantic's errors may be estimated to hold for one body."""
BYTES_PER_ERROR: Final = 1024
"""What one pydantic error holds besides its input's copy (about 700 bytes measured)."""
ERRORS_NAMED: Final = 100
"""Errors a refused report names (the rest are counted)."""


@dataclass(frozen=True)
class _Shape:
    fields: frozenset[str]
    required: frozenset[str]
    nested: dict[str, tuple[type[BaseModel], int | None]]
    """The model of each field holding objects (alone, in a list, or optional), and the most
    items pydantic reads of it when it is a list (it stops one past the cap)."""


@dataclass(frozen=True)
class ReportError:
    """An error pydantic would report: a missing field or an unknown key, where."""

    loc: tuple[str | int, ...]
    missing: bool


@dataclass
class CopyCost:
    """What refusing one report would hold, and the errors that make it."""

    held_bytes: int = 0
    errors: list[ReportError] = field(default_factory=list)
    """The first :data:`ERRORS_NAMED` of them."""
    error_count: int = 0


def copy_cost(value: Any, model: type[BaseModel], *, budget: int = MAX_ERROR_BYTES) -> CopyCost:
    """Estimate what pydantic's missing-field and unknown-key errors would hold validating
    ``value`` (plain JSON decoding) as ``model``. Stops once over ``budget``."""
    cost = CopyCost()
    stack: list[tuple[Any, type[BaseModel], tuple[str | int, ...]]] = [(value, model, ())]
    while stack and cost.held_bytes <= budget:
        item, item_model, loc = stack.pop()
        if not isinstance(item, dict):
            continue  # a type error: one copy of this value, bounded by the body's weight
        shape = _shape(item_model)
        if not shape.required.issubset(item.keys()):
            absent = sorted(shape.required.difference(item))
            copy = decoded_bytes(item)
            cost.held_bytes += len(absent) * (copy + BYTES_PER_ERROR)
            _name(cost, loc, absent, missing=True)
        if not shape.fields.issuperset(item.keys()):
            unknown = [key for key in item if key not in shape.fields]
            cost.held_bytes += sum(BYTES_PER_ERROR + decoded_bytes(item[key]) for key in unknown)
            _name(cost, loc, unknown, missing=False)
        for key, (child_model, most) in shape.nested.items():
            child = item.get(key)
            if isinstance(child, list):
                read = child if most is None else child[: most + 1]
                stack.extend(
                    (element, child_model, (*loc, key, index)) for index, element in enumerate(read)
                )
            elif child is not None:
                stack.append((child, child_model, (*loc, key)))
    return cost


def _name(cost: CopyCost, loc: tuple[str | int, ...], keys: list[str], *, missing: bool) -> None:
    room = ERRORS_NAMED - len(cost.errors)
    if room > 0:
        cost.errors.extend(ReportError((*loc, key), missing=missing) for key in keys[:room])
    cost.error_count += len(keys)


RUST_BYTES_PER_VALUE: Final = 32
"""What pydantic-core's own copy of an error's input takes per JSON value, beside Python's."""


def decoded_bytes(value: Any) -> int:
    """An upper estimate of what an error's copy of ``value`` takes: Python's objects (4 bytes
    a character) and pydantic-core's own copy."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += RUST_BYTES_PER_VALUE
        if isinstance(item, dict):
            total += 64 + 80 * len(item) + sum(80 + 4 * len(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            total += 56 + 8 * len(item)
            stack.extend(item)
        elif isinstance(item, str):
            total += 80 + 4 * len(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            total += 32
    return total


@cache
def _shape(model: type[BaseModel]) -> _Shape:
    nested: dict[str, tuple[type[BaseModel], int | None]] = {}
    for name, info in model.model_fields.items():
        found = _model_in(info.annotation)
        if found is not None:
            nested[name] = (found, _most_items(info.metadata))
    required = frozenset(name for name, info in model.model_fields.items() if info.is_required())
    return _Shape(frozenset(model.model_fields), required, nested)


def _most_items(metadata: list[Any]) -> int | None:
    limits = [item.max_length for item in metadata if getattr(item, "max_length", None)]
    return min(limits) if limits else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds objects of: itself, in a list, optional or annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType, typing.Annotated):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None
