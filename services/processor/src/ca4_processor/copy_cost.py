"""What pydantic's errors would copy while refusing a body, counted before it validates it.

Each pydantic error keeps its own Python copy of the input it names, and an object that lacks
required fields is copied once per missing field, with everything under it: a value under a MIG
slice of a report that lacks everything else is copied twelve times. A key holder's body of
that shape held 32-48 times its weight while it was refused, over the processor's memory limit
at the weight limit. Valid bodies lack no field, so they copy nothing; this counts the copies of
a large body's objects that lack fields, on its plain JSON decoding, so the caller can refuse
them before pydantic makes them.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from pydantic import BaseModel

CHECK_ABOVE_WEIGHT: Final = 2 * 1024 * 1024
"""Bodies weighing more (``ca4_processor.body.body_weight``) are counted first; below it the
worst shape measured holds under 100 MB while refused."""
MAX_COPIED_VALUES: Final = 500_000
"""Most JSON values pydantic's missing-field errors may copy for one body: about 50 MB, at the
100 bytes or less each decoded value takes."""


@dataclass(frozen=True)
class _Shape:
    required: frozenset[str]
    nested: dict[str, type[BaseModel]]
    """The model of each field holding objects (alone, in a list, or optional)."""


@dataclass(frozen=True)
class MissingField:
    """A required field an object lacks, where, and how many values its object holds."""

    loc: tuple[str | int, ...]
    values_under: int


def copied_values(value: Any, model: type[BaseModel]) -> tuple[int, list[MissingField]]:
    """The values pydantic's errors would copy validating ``value`` (plain JSON decoding) as
    ``model``, and the missing required fields that make them copy."""
    copies = 0
    missing: list[MissingField] = []
    stack: list[tuple[Any, type[BaseModel], tuple[str | int, ...]]] = [(value, model, ())]
    while stack:
        item, item_model, loc = stack.pop()
        if not isinstance(item, dict):
            continue  # a type error: one copy of this value, counted by the body's weight
        shape = _shape(item_model)
        absent = [name for name in shape.required if name not in item]
        if absent:
            under = _count_values(item)
            copies += len(absent) * under
            missing.extend(MissingField((*loc, name), under) for name in sorted(absent))
        for key, child_model in shape.nested.items():
            child = item.get(key)
            if isinstance(child, list):
                stack.extend(
                    (element, child_model, (*loc, key, index))
                    for index, element in enumerate(child)
                )
            elif child is not None:
                stack.append((child, child_model, (*loc, key)))
    return copies, missing


@cache
def _shape(model: type[BaseModel]) -> _Shape:
    nested: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        found = _model_in(field.annotation)
        if found is not None:
            nested[name] = found
    required = frozenset(name for name, field in model.model_fields.items() if field.is_required())
    return _Shape(required, nested)


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


def _count_values(value: Any) -> int:
    """Every JSON value in ``value``, itself included."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count
