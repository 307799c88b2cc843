"""``SessionOwnerCache``: bounded, least recently used within a tenant, and fair between
tenants: a tenant making new sessions as fast as it can turns over only its own."""

from __future__ import annotations

from ca4_auth import SessionOwnerCache


def _fill(cache: SessionOwnerCache, tenant: str, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        cache.put(f"{tenant}-{n}", tenant)


def test_a_tenant_flooding_new_sessions_turns_over_only_its_own() -> None:
    # A plain LRU of 100: 10,000 fresh sessions of one tenant left none of the others'.
    cache = SessionOwnerCache(100)
    _fill(cache, "a", 30)
    _fill(cache, "b", 20)
    _fill(cache, "flood", 10_000)

    assert len(cache) == 100
    assert all(cache.get(f"a-{n}") == "a" for n in range(30))
    assert all(cache.get(f"b-{n}") == "b" for n in range(20))
    assert sum(cache.get(f"flood-{n}") is not None for n in range(10_000)) == 50
    assert cache.get("flood-9999") == "flood"  # its newest, least recently used go first


def test_a_flood_takes_room_only_from_the_largest_down_to_its_own_size() -> None:
    cache = SessionOwnerCache(100)
    _fill(cache, "a", 70)
    _fill(cache, "b", 20)
    _fill(cache, "flood", 10_000)

    held_by_a = sum(cache.get(f"a-{n}") is not None for n in range(70))
    assert all(cache.get(f"b-{n}") == "b" for n in range(20))
    assert 39 <= held_by_a <= 41  # even with the flood: (100 - 20) / 2


def test_one_tenant_alone_gets_all_the_room_least_recently_used_first() -> None:
    cache = SessionOwnerCache(100)
    _fill(cache, "a", 100)
    assert cache.get("a-0") == "a"  # used again: now the most recent
    _fill(cache, "a", 50, start=100)

    assert len(cache) == 100
    assert cache.get("a-0") == "a"
    assert [n for n in range(1, 51) if cache.get(f"a-{n}") is not None] == []
    assert all(cache.get(f"a-{n}") == "a" for n in range(51, 150))


def test_room_comes_from_the_largest_tenant_until_they_are_even() -> None:
    cache = SessionOwnerCache(100)
    _fill(cache, "a", 100)
    _fill(cache, "b", 60)

    held = dict.fromkeys(("a", "b"), 0)
    for n in range(100):
        if cache.get(f"a-{n}") is not None:
            held["a"] += 1
    for n in range(60):
        if cache.get(f"b-{n}") is not None:
            held["b"] += 1
    assert held == {"a": 50, "b": 50}


def test_a_known_session_keeps_its_first_owner() -> None:
    cache = SessionOwnerCache(10)
    cache.put("s", "a")
    cache.put("s", "b")

    assert cache.get("s") == "a"
    assert len(cache) == 1
