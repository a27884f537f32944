"""Every test under tests/ha/ carries the `ha` marker (select or skip with -m ha / -m "not ha").

These tests start real infrastructure from Debian packages (scripts/ensure-ha-tools):
PostgreSQL primaries and standbys, HAProxy, etcd and Patroni, and hosts made of
network namespaces. None of them imports the node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.ha)
