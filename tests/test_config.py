"""Settings read from the machine: how many scoring processes a run starts by default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backfill_quality.config import available_cpus

AFFINITY = len(os.sched_getaffinity(0))


def cgroup_v2(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def cgroup_v1(tmp_path: Path, quota_us: int, period_us: int) -> Path:
    folder = tmp_path / "cpu"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return folder


def test_without_a_quota_every_cpu_of_the_affinity_mask(tmp_path: Path) -> None:
    unlimited = cgroup_v2(tmp_path, "max 100000\n")
    assert available_cpus(unlimited, tmp_path / "absent") == AFFINITY
    assert available_cpus(tmp_path / "absent", tmp_path / "absent") == AFFINITY


@pytest.mark.parametrize(("quota", "expected"), [("100000 100000", 1), ("150000 100000", 2)])
def test_a_container_quota_caps_the_count_rounded_up(
    tmp_path: Path, quota: str, expected: int
) -> None:
    limited = cgroup_v2(tmp_path, quota + "\n")
    assert available_cpus(limited, tmp_path / "absent") == min(expected, AFFINITY)


def test_cgroup_v1_quota_is_read_when_v2_is_absent(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "absent", cgroup_v1(tmp_path, 50_000, 100_000)) == 1
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    (unlimited / "cpu.cfs_quota_us").write_text("-1\n")
    (unlimited / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path / "absent", unlimited) == AFFINITY


def test_an_unreadable_quota_is_ignored(tmp_path: Path) -> None:
    assert available_cpus(cgroup_v2(tmp_path, "garbage"), tmp_path / "absent") == AFFINITY


def test_the_machine_default_is_at_least_one_and_at_most_the_host() -> None:
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
