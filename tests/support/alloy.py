"""A parser for the Grafana Alloy configuration syntax, enough to check our configs in CI.

The Alloy binary cannot be installed here (the Go proxy answers 403 for github.com/grafana/alloy
and no distribution package exists), so ``alloy fmt``/``alloy validate`` cannot run. This parses
the syntax (blocks, attributes, literals, lists, objects, references, calls, operators) strictly
and raises :class:`AlloySyntaxError` with a line number, so a typo fails CI; what it cannot check
is the components' argument schemas, which only Alloy itself knows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r]+|//[^\n]*|/\*.*?\*/)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%^<>!=.,\[\](){}])
    """,
    re.VERBOSE | re.DOTALL,
)
BINARY = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, ">": 3, "<=": 3, ">=": 3}
BINARY |= {"+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "^": 6}


class AlloySyntaxError(ValueError):
    """The text is not valid Alloy syntax."""


@dataclass(frozen=True)
class Reference:
    """A dotted name such as ``discovery.relabel.pods.output``."""

    path: str


@dataclass(frozen=True)
class Call:
    """A function call such as ``sys.env("HOSTNAME")``."""

    function: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Operation:
    """A unary or binary operation."""

    operator: str
    operands: tuple[Any, ...]


@dataclass
class Block:
    """``name "label" { ... }``: attributes in order, nested blocks in order."""

    name: str
    label: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def children(self, name: str) -> list[Block]:
        """The nested blocks called ``name``."""
        return [block for block in self.blocks if block.name == name]

    def walk(self) -> Iterator[Block]:
        """This block and every block below it."""
        yield self
        for block in self.blocks:
            yield from block.walk()


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    line, position = 1, 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            raise AlloySyntaxError(f"line {line}: unexpected {text[position]!r}")
        kind, value = match.lastgroup or "", match.group()
        if kind == "newline":
            tokens.append(("newline", value, line))
        elif kind != "space":
            tokens.append((kind, value, line))
        line += value.count("\n")
        position = match.end()
    tokens.append(("eof", "", line))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self, skip_newlines: bool = True) -> tuple[str, str, int]:
        while skip_newlines and self.tokens[self.at][0] == "newline":
            self.at += 1
        return self.tokens[self.at]

    def take(self, kind: str, value: str | None = None) -> str:
        token_kind, token_value, line = self.peek()
        if token_kind != kind or (value is not None and token_value != value):
            raise AlloySyntaxError(f"line {line}: expected {value or kind}, got {token_value!r}")
        self.at += 1
        return token_value

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in {"op"}:
            self.at += 1
            return True
        return False

    def body(self, into: Block, closing: str | None) -> Block:
        while True:
            kind, value, line = self.peek()
            if closing is None and kind == "eof":
                return into
            if closing is not None and value == closing and kind == "op":
                self.at += 1
                return into
            name = self.take("ident")
            while self.accept("."):
                name += "." + self.take("ident")
            kind, value, line = self.peek()
            if value == "=" and kind == "op":
                if "." in name:
                    raise AlloySyntaxError(f"line {line}: attribute name {name!r} has a dot")
                if name in into.attributes:
                    raise AlloySyntaxError(f"line {line}: attribute {name} set twice")
                self.at += 1
                into.attributes[name] = self.expression()
                self.end_of_statement()
                continue
            label = None
            if kind == "string":
                label = _unquote(self.take("string"))
            self.take("op", "{")
            into.blocks.append(self.body(Block(name, label), "}"))
            self.end_of_statement()

    def end_of_statement(self) -> None:
        kind, value, line = self.peek(skip_newlines=False)
        if kind not in {"newline", "eof"} and value != "}":
            raise AlloySyntaxError(f"line {line}: expected a new line, got {value!r}")

    def expression(self, precedence: int = 0) -> Any:
        left = self.unary()
        while True:
            kind, value, _ = self.peek(skip_newlines=False)
            if kind != "op" or BINARY.get(value, 0) <= precedence:
                return left
            self.at += 1
            left = Operation(value, (left, self.expression(BINARY[value])))

    def unary(self) -> Any:
        kind, value, _ = self.peek()
        if kind == "op" and value in {"!", "-"}:
            self.at += 1
            return Operation(value, (self.unary(),))
        return self.postfix(self.primary())

    def postfix(self, value: Any) -> Any:
        while True:
            kind, token, _ = self.peek(skip_newlines=False)
            if kind == "op" and token == "." and isinstance(value, Reference):
                self.at += 1
                value = Reference(f"{value.path}.{self.take('ident')}")
            elif kind == "op" and token == "(" and isinstance(value, Reference):
                self.at += 1
                value = Call(value.path, tuple(self.sequence(")")))
            elif kind == "op" and token == "[":
                self.at += 1
                value = Operation("[]", (value, self.expression()))
                self.take("op", "]")
            else:
                return value

    def primary(self) -> Any:
        kind, value, line = self.peek()
        self.at += 1
        if kind == "string":
            return _unquote(value)
        if kind == "raw":
            return value[1:-1]
        if kind == "number":
            return float(value) if "." in value or "e" in value.lower() else int(value)
        if kind == "ident":
            return {"true": True, "false": False, "null": None}.get(value, Reference(value))
        if value == "(":
            inner = self.expression()
            self.take("op", ")")
            return inner
        if value == "[":
            return self.sequence("]")
        if value == "{":
            return self.object()
        raise AlloySyntaxError(f"line {line}: unexpected {value!r}")

    def sequence(self, closing: str) -> list[Any]:
        items: list[Any] = []
        while not self.accept(closing):
            items.append(self.expression())
            if not self.accept(","):
                self.take("op", closing)
                break
        return items

    def object(self) -> dict[str, Any]:
        items: dict[str, Any] = {}
        while not self.accept("}"):
            kind, _, line = self.peek()
            key = _unquote(self.take("string")) if kind == "string" else self.take("ident")
            if key in items:
                raise AlloySyntaxError(f"line {line}: key {key} set twice")
            self.take("op", "=")
            items[key] = self.expression()
            if not self.accept(","):
                self.take("op", "}")
                break
        return items


def _unquote(token: str) -> str:
    return token[1:-1].encode("utf-8").decode("unicode_escape")


def parse(text: str) -> Block:
    """The configuration as a root block; :class:`AlloySyntaxError` if it does not parse."""
    return _Parser(text).body(Block("<root>"), None)


def components(config: Block) -> dict[str, Block]:
    """The top-level components by ``name.label`` (``loki.write.loki``)."""
    found: dict[str, Block] = {}
    for block in config.blocks:
        key = f"{block.name}.{block.label}"
        if key in found:
            raise AlloySyntaxError(f"component {key} is declared twice")
        found[key] = block
    return found


def references(value: Any) -> Iterator[str]:
    """Every dotted name an attribute value refers to."""
    if isinstance(value, Reference):
        yield value.path
    elif isinstance(value, Call):
        for argument in value.args:
            yield from references(argument)
    elif isinstance(value, Operation):
        for operand in value.operands:
            yield from references(operand)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)


def stream_labels(config: Block) -> set[str]:
    """The Loki stream labels a pipeline attaches: relabel targets, stage.labels and
    stage.static_labels keys, and sources' ``labels`` arguments."""
    labels: set[str] = set()
    for block in config.walk():
        if block.name == "rule":
            target = block.attributes.get("target_label", "")
            if isinstance(target, str) and target and not target.startswith("__"):
                labels.add(target)
        elif block.name in {"stage.labels", "stage.static_labels"}:
            labels |= set(block.attributes.get("values", {}))
        elif block.name.startswith("loki.source."):
            labels |= set(block.attributes.get("labels", {}))
    return labels
