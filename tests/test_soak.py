"""The fault soak (benchmarks/soak.py): every fault survived. The default suite injects one
kill -9 into each operation (plus QEMU killed alone and a corrupt layer); ``-m slow`` runs
the 50-point soak."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak import print_table, soak

from sandbox_app.core.storage import Paths


def _all_survived(paths: Paths, points: int, seed: int) -> None:
    rows = soak(paths, points, seed)
    print_table(rows)
    assert all(r.survived == r.count for r in rows), [f for r in rows for f in r.failures]


@pytest.mark.timeout(1200)
def test_one_kill_in_each_operation_qemu_killed_and_a_corrupt_layer(tiny_paths: Paths) -> None:
    _all_survived(tiny_paths, 5, seed=7)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fifty_kill_points(tiny_paths: Paths) -> None:
    _all_survived(tiny_paths, 50, seed=1)


@pytest.mark.root  # a small filesystem to fill: a tmpfs mount
def test_disk_full_during_keep_and_during_a_session(tiny_paths: Paths) -> None:
    rows = soak(tiny_paths, 0, seed=3)
    print_table(rows)
    full = [r for r in rows if r.fault.startswith("disk full during")]
    assert len(full) == 2 and all(r.survived == r.count == 1 for r in full), \
        [f for r in full for f in r.failures]
