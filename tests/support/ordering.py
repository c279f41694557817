"""Test order for `pytest -n N --dist worksteal`: every worker starts with its share of the
slow tests.

worksteal gives each of the N workers one contiguous block of the collection (sizes as
equal as counts allow) and, when a worker runs dry, moves the far half of the longest
queue to it. A slow test that sits late in a block starts late and nobody can take it
over once it runs, so the run ends with one worker finishing a 30 s test alone. Here each
block begins with slow tests (`@pytest.mark.slow`, dealt out so every block gets a like
number) and ends with quick ones, which are the ones that move between workers at the end.

Slow tests of a module with a module-scoped fixture (a shared server) stay together so the
fixture starts once. If the blocks cannot be laid out (fewer quick tests than the layout
needs), the collection order is kept.
"""

from __future__ import annotations

import pytest

_SHARED_SCOPES = frozenset({"module", "class", "package"})


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether `item` uses a fixture set up once for its module (or class, or package)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs[-1].scope in _SHARED_SCOPES for defs in info.name2fixturedefs.values())


def _slow_units(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """Slow tests in collection order, as units: one test, or a module's tests that share
    a fixture."""
    units: list[list[pytest.Item]] = []
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        if _shares_a_fixture(item):
            module = item.nodeid.split("::", 1)[0]
            if module not in by_module:
                by_module[module] = []
                units.append(by_module[module])
            by_module[module].append(item)
        else:
            units.append([item])
    return units


def block_sizes(total: int, workers: int) -> list[int]:
    """How worksteal splits `total` tests between `workers` idle workers."""
    sizes = []
    for i in range(workers):
        sizes.append(total // (workers - i))
        total -= sizes[-1]
    return sizes


def slow_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """`items` reordered so that each of `workers` blocks starts with its slow tests."""
    slow: list[pytest.Item] = []
    quick: list[pytest.Item] = []
    for item in items:
        (quick if item.get_closest_marker("slow") is None else slow).append(item)
    if workers < 2 or not slow:
        return items
    blocks: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for unit in sorted(_slow_units(slow), key=len, reverse=True):  # largest first
        min(blocks, key=len).extend(unit)
    ordered: list[pytest.Item] = []
    for block, size in zip(blocks, block_sizes(len(items), workers), strict=True):
        fill = size - len(block)
        if fill < 0:
            return items
        ordered += block + quick[:fill]
        del quick[:fill]
    return ordered
