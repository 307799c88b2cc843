"""A recording stand-in for pymongo's async database, for the adapters' unit tests: only the
calls and filter operators the adapters send, every call recorded, and failures queued per
command (an :class:`OperationFailure` a server would answer, raised once each)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, cast

from ca4_worker.persistence.documents import Doc
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

DUPLICATE_KEY = 11000


def _value(doc: Doc, path: str) -> tuple[bool, Any]:
    """Whether ``doc`` has the dotted ``path``, and its value there."""
    current: Any = doc
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _condition_holds(present: bool, value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return present and value == condition
    checks = {
        "$gt": lambda operand: present and value > operand,
        "$lt": lambda operand: present and value < operand,
        "$in": lambda operand: present and value in operand,
        "$ne": lambda operand: not present or value != operand,
        "$exists": lambda operand: present is bool(operand),
    }
    return all(checks[operator](operand) for operator, operand in condition.items())


def matches(doc: Doc, conditions: Doc) -> bool:
    """Whether ``doc`` matches ``conditions`` (equality, ``$gt/$lt/$in/$ne/$exists``, ``$or``)."""
    for key, condition in conditions.items():
        if key == "$or":
            if not any(matches(doc, branch) for branch in condition):
                return False
        elif not _condition_holds(*_value(doc, key), condition):
            return False
    return True


def _projected(doc: Doc, projection: Doc | None) -> Doc:
    if not projection:
        return dict(doc)
    kept = {key for key, wanted in projection.items() if wanted and key != "_id"}
    shown = {key: value for key, value in doc.items() if key in kept}
    if projection.get("_id", 1):
        shown["_id"] = doc["_id"]
    return shown


def _sort_key(keys: Sequence[tuple[str, int]]) -> Any:
    def key(doc: Doc) -> tuple[Any, ...]:
        return tuple(doc.get(name) for name, _ in keys)

    return key


class FakeCursor:
    """A find cursor: ``sort``, ``limit``, ``batch_size``, ``close``, iterated async."""

    def __init__(self, docs: list[Doc]) -> None:
        self._docs = docs
        self._sort: list[tuple[str, int]] = []
        self._limit = 0

    def sort(self, key: str | list[tuple[str, int]], direction: int = 1) -> Self:
        self._sort = [(key, direction)] if isinstance(key, str) else list(key)
        return self

    def limit(self, limit: int) -> Self:
        self._limit = limit
        return self

    def batch_size(self, _batch: int) -> Self:
        return self

    async def close(self) -> None:
        return None

    def rows(self) -> list[Doc]:
        docs = sorted(self._docs, key=_sort_key(self._sort)) if self._sort else self._docs
        return docs[: self._limit] if self._limit else docs

    def __aiter__(self) -> AsyncIterator[Doc]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Doc]:
        for doc in self.rows():
            yield doc


@dataclass
class FakeCollection:
    """One collection: its documents by ``_id``, its index names, the calls it got."""

    name: str
    docs: dict[Any, Doc] = field(default_factory=dict)
    index_names: set[str] = field(default_factory=lambda: {"_id_"})
    calls: list[tuple[str, Any]] = field(default_factory=list)
    failures: dict[str, list[Exception | None]] = field(default_factory=dict)
    """Per command name, what its next calls raise, one each (``None``: that call succeeds)."""

    def _call(self, command: str, argument: Any = None) -> None:
        self.calls.append((command, argument))
        queued = self.failures.get(command)
        failure = queued.pop(0) if queued else None
        if failure is not None:
            raise failure

    def commands(self, command: str) -> list[Any]:
        """The arguments of each call of ``command``, in order."""
        return [argument for name, argument in self.calls if name == command]

    async def list_indexes(self) -> FakeCursor:
        self._call("listIndexes")
        return FakeCursor([{"name": name} for name in sorted(self.index_names)])

    async def create_indexes(self, indexes: Sequence[IndexModel]) -> list[str]:
        names = [index.document["name"] for index in indexes]
        self._call("createIndexes", names)
        self.index_names.update(names)
        return names

    async def distinct(self, key: str, conditions: Doc | None = None) -> list[Any]:
        self._call("distinct", (key, conditions))
        return sorted({doc[key] for doc in self.docs.values() if matches(doc, conditions or {})})

    def find(self, conditions: Doc | None = None, projection: Doc | None = None) -> FakeCursor:
        self._call("find", conditions or {})
        found = [doc for doc in self.docs.values() if matches(doc, conditions or {})]
        return FakeCursor([_projected(doc, projection) for doc in found])

    async def find_one(
        self,
        conditions: Doc | None = None,
        projection: Doc | None = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        hint: str | None = None,
    ) -> Doc | None:
        if hint is not None and hint not in self.index_names:
            raise OperationFailure(f"hint {hint} does not correspond to an index", code=2)
        self._call("find_one", conditions or {})
        found = [doc for doc in self.docs.values() if matches(doc, conditions or {})]
        rows = FakeCursor(found).sort(sort or []).limit(1).rows()
        return _projected(rows[0], projection) if rows else None

    async def insert_many(self, docs: list[Doc], *, ordered: bool = True) -> None:
        self._call("insert_many", len(docs))
        errors = []
        for index, doc in enumerate(docs):
            if doc["_id"] in self.docs:
                errors.append({"index": index, "code": DUPLICATE_KEY, "errmsg": "duplicate"})
                if ordered:
                    break
            else:
                self.docs[doc["_id"]] = dict(doc)
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})

    def _update(self, doc: Doc, update: Doc) -> None:
        for key, value in update.get("$set", {}).items():
            doc[key] = value
        for key, value in update.get("$inc", {}).items():
            doc[key] = doc.get(key, 0) + value

    async def update_many(self, conditions: Doc, update: Doc) -> None:
        self._call("update_many", conditions)
        for doc in self.docs.values():
            if matches(doc, conditions):
                self._update(doc, update)

    async def update_one(self, conditions: Doc, update: Doc, *, upsert: bool = False) -> None:
        self._call("update_one", conditions)
        found = [doc for doc in self.docs.values() if matches(doc, conditions)]
        if found:
            self._update(found[0], update)
        elif upsert:
            doc = {"_id": conditions["_id"]}
            self._update(doc, update)
            self.docs[doc["_id"]] = doc

    async def delete_one(self, conditions: Doc) -> None:
        self._call("delete_one", conditions)
        found = [key for key, doc in self.docs.items() if matches(doc, conditions)]
        if found:
            del self.docs[found[0]]


class FakeDatabase:
    """Collections made on first use, as a database's are."""

    def __init__(self) -> None:
        self.collections: dict[str, FakeCollection] = {}

    def __getitem__(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection(name))

    def as_database(self) -> AsyncDatabase[Doc]:
        """This fake, typed as what the adapters take."""
        return cast(AsyncDatabase[Doc], self)
