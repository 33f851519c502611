"""The checkpoint file: round trip, strict validation, atomic save, fingerprint, low-water mark."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill_quality.config import Shard, Target
from backfill_quality.errors import CheckpointError
from backfill_quality.models import ImageRow, Outcome
from backfill_quality.pipeline.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    FailedImage,
    checkpoint_path_for,
    load_checkpoint,
    save_checkpoint,
)
from backfill_quality.pipeline.lowwater import LowWaterMark
from backfill_quality.pipeline.resume import check_resumable
from backfill_quality.pipeline.target import database_identity, describe_target, make_fingerprint
from backfill_quality.redaction import redact

SECRET = "s3cret-pw"
DB_URL = f"postgresql://backfill:{SECRET}@db.example.com:6543/app?sslmode=require"


def sample_checkpoint() -> Checkpoint:
    checkpoint = Checkpoint(
        fingerprint=make_fingerprint(database=DB_URL, target=Target(), shard=None),
        dry_run=False,
        total=10,
        start_time=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        last_processed_id="0b4b7e1c-1d1f-4d43-9a57-5c9b9c6f6a01",
        estimated_time_remaining="1m 05s",
        target=describe_target(database=DB_URL, target=Target(), shard=None),
    )
    checkpoint.record(Outcome(ImageRow("a1", "https://img/a1.jpg"), score=88))
    checkpoint.record(Outcome(ImageRow("a2", "https://img/a2.jpg"), error="HTTP 404", attempts=2))
    checkpoint.record(Outcome(ImageRow("a3", "https://img/a3.jpg"), score=10), is_skipped=True)
    return checkpoint


def test_round_trip_keeps_every_field_and_the_original_keys(tmp_path: Path) -> None:
    path = tmp_path / ".backfill-progress.json"
    original = sample_checkpoint()
    save_checkpoint(path, original)

    loaded = load_checkpoint(path)

    assert loaded == original
    data = json.loads(path.read_text())
    original_keys = {"total", "processed", "succeeded", "failed", "startTime", "lastProcessedId"}
    assert original_keys | {"estimatedTimeRemaining", "failedImages"} <= data.keys()
    assert data["version"] == CHECKPOINT_VERSION
    assert (data["processed"], data["succeeded"], data["failed"], data["skipped"]) == (3, 1, 1, 1)
    assert data["startTime"] == "2025-01-02T03:04:05.678Z"
    assert data["failedImages"] == [
        {"id": "a2", "url": "https://img/a2.jpg", "error": "HTTP 404", "attempts": 2}
    ]


def test_integer_ids_stay_integers(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = Checkpoint(fingerprint="f", dry_run=True, last_processed_id=2**40)
    checkpoint.failed_images.append(FailedImage(id=7, url="http://x/7", error="boom"))
    save_checkpoint(path, checkpoint)

    loaded = load_checkpoint(path)

    assert loaded is not None
    assert loaded.last_processed_id == 2**40
    assert loaded.failed_images[0].id == 7


def test_absent_checkpoint_loads_as_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "nothing.json") is None


def test_no_password_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = sample_checkpoint()
    checkpoint.record(
        Outcome(
            ImageRow(9, f"https://user:{SECRET}@cdn.example/9.jpg"),
            error=f"database {DB_URL} said no; password={SECRET}",
        )
    )
    save_checkpoint(path, checkpoint)

    text = path.read_text()

    assert SECRET not in text
    assert "https://user:***@cdn.example/9.jpg" in text
    assert "db.example.com:6543/app" in text  # the readable target description


def valid_json() -> dict[str, Any]:
    return sample_checkpoint().to_json()


def with_changes(**changes: Any) -> dict[str, Any]:
    data = valid_json()
    for key, value in changes.items():
        if value is _DELETE:
            del data[key]
        else:
            data[key] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "holds a JSON list, not an object — delete it or use --restart"),
        (None, "holds a JSON null, not an object"),
        (with_changes(version=_DELETE), "has no version"),
        (with_changes(version=7), "is from version 7; this tool writes version 1 — start over"),
        (with_changes(total=_DELETE), "lacks the keys total"),
        (with_changes(extra=1), "has unknown keys extra"),
        (with_changes(processed="3"), "has processed = '3', expected an integer ≥ 0"),
        (with_changes(failed=-1), "has failed = -1, expected an integer ≥ 0"),
        (with_changes(total=True), "has total = True, expected an integer ≥ 0"),
        (with_changes(dryRun=0), "has dryRun = 0, expected true or false"),
        (with_changes(startTime="yesterday"), "has startTime = 'yesterday', expected an ISO"),
        (with_changes(lastProcessedId=[1]), "has lastProcessedId = [1], expected a string or"),
        (with_changes(shard=4), "has shard = 4, expected a string"),
        (with_changes(failedImages={}), "has failedImages = {}, expected a list"),
        (with_changes(failedImages=[{"id": 1}]), "has failedImages[0] without id, url and error"),
        (
            with_changes(failedImages=[{"id": 1.5, "url": "u", "error": "e"}]),
            "has failedImages[0].id = 1.5, expected a string or an integer id",
        ),
        (
            with_changes(failedImages=[{"id": 1, "url": "u", "error": "e", "x": 1}]),
            "has failedImages[0] with unknown keys",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_invalid_checkpoint_is_refused_with_a_clear_message(
    tmp_path: Path, data: Any, message: str
) -> None:
    path = tmp_path / "cp.json"
    path.write_text(json.dumps(data))

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)

    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "--restart" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{\n  "version": 1,\n  "total": ,\n}', "is not valid JSON (line 3, column 12)"),
        (b"", "is not valid JSON (line 1, column 1)"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
)
def test_unreadable_checkpoint_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "cp.json"
    path.write_bytes(content)

    with pytest.raises(CheckpointError, match="delete it or use --restart") as caught:
        load_checkpoint(path)

    assert message in str(caught.value)


def test_a_directory_in_place_of_the_checkpoint_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)


def test_save_into_a_path_whose_parent_is_a_file_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("I am a file")

    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(blocker / "cp.json", sample_checkpoint())

    assert "cannot save checkpoint" in str(caught.value)
    assert "writable" in str(caught.value)
    assert blocker.read_text() == "I am a file"


def test_failed_rename_leaves_the_old_state_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "cp.json"
    target.mkdir()  # os.replace cannot put a file over a directory
    (target / "keep").write_text("old")

    with pytest.raises(CheckpointError, match="cannot save checkpoint"):
        save_checkpoint(target, sample_checkpoint())

    assert (target / "keep").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.json"]


def test_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk cannot be produced reliably here, so fsync reports ENOSPC as a real one would.
    path = tmp_path / "cp.json"
    first = sample_checkpoint()
    save_checkpoint(path, first)
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    second = sample_checkpoint()
    second.processed = 99
    with pytest.raises(CheckpointError, match="the disk is full") as caught:
        save_checkpoint(path, second)

    assert "unchanged" in str(caught.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cp.json"]


def test_save_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "2025" / "cp.json"
    save_checkpoint(path, sample_checkpoint())
    assert load_checkpoint(path) == sample_checkpoint()


def test_fingerprint_is_stable_and_ignores_credentials() -> None:
    target = Target()
    fingerprint = make_fingerprint(database=DB_URL, target=target, shard=None)

    other_password = DB_URL.replace(SECRET, "another")
    assert make_fingerprint(database=other_password, target=target, shard=None) == fingerprint
    assert len(fingerprint) == 16
    assert int(fingerprint, 16) >= 0
    assert fingerprint == "f9f6ef754cb748ea"  # pinned: changing it orphans existing checkpoints


@pytest.mark.parametrize(
    ("database", "target", "shard"),
    [
        (DB_URL.replace("/app", "/other"), Target(), None),
        (DB_URL.replace("6543", "5432"), Target(), None),
        (DB_URL, Target(table="photos"), None),
        (DB_URL, Target(schema="archive"), None),
        (DB_URL, Target(id_column="uuid"), None),
        (DB_URL, Target(url_column="src"), None),
        (DB_URL, Target(score_column="q"), None),
        (DB_URL, Target(), Shard(0, 4)),
    ],
)
def test_fingerprint_changes_with_the_target(
    database: str, target: Target, shard: Shard | None
) -> None:
    base = make_fingerprint(database=DB_URL, target=Target(), shard=None)
    assert make_fingerprint(database=database, target=target, shard=shard) != base


@pytest.mark.parametrize(
    ("database", "identity"),
    [
        (DB_URL, "db.example.com:6543/app"),
        ("postgresql://postgres:@/t_1?host=/tmp/Sock", "/tmp/Sock:5432/t_1"),
        ("postgres://[::1]:5433/x", "[::1]:5433/x"),
        (f"host=db port=5 dbname=app user=u password={SECRET}", "db:5/app"),
        (f"host=db dbname=app password='{SECRET} x'", "db:5432/app"),
        ("", "(libpq defaults)"),
        ("db:5432/app", "db:5432/app"),
    ],
)
def test_database_identity_never_holds_the_password(database: str, identity: str) -> None:
    assert database_identity(database) == identity


def test_target_description_is_readable_and_secret_free() -> None:
    description = describe_target(database=DB_URL, target=Target(), shard=Shard(0, 4))
    assert description == "db.example.com:6543/app images(id,url→quality_score) shard 0/4"


def test_redact_masks_passwords_in_urls_and_key_values() -> None:
    text = f"{DB_URL} and https://u:{SECRET}@h/x and password={SECRET} and https://h/plain"
    redacted = redact(text)
    assert SECRET not in redacted
    assert "postgresql://backfill:***@db.example.com" in redacted
    assert "https://h/plain" in redacted


@pytest.mark.parametrize(
    ("base", "dry_run", "shard", "expected"),
    [
        (".backfill-progress.json", False, None, ".backfill-progress.json"),
        (".backfill-progress.json", True, None, ".backfill-progress.dry-run.json"),
        (".backfill-progress.json", False, Shard(0, 4), ".backfill-progress.shard-0-of-4.json"),
        ("/var/x/p.json", True, Shard(3, 4), "/var/x/p.shard-3-of-4.dry-run.json"),
        ("progress", True, None, "progress.dry-run"),
    ],
)
def test_checkpoint_path_for_each_kind_of_run(
    base: str, dry_run: bool, shard: Shard | None, expected: str
) -> None:
    assert checkpoint_path_for(Path(base), dry_run=dry_run, shard=shard) == Path(expected)


@pytest.mark.parametrize(
    ("target", "dry_run", "shard", "expected"),
    [
        (Target(), False, None, ".backfill-progress.json"),
        (Target(schema="public"), True, None, ".backfill-progress.dry-run.json"),
        (Target(table="photos"), False, None, ".backfill-progress.photos.json"),
        (
            Target(table="photos", schema="media"),
            True,
            Shard(1, 2),
            ".backfill-progress.media.photos.shard-1-of-2.dry-run.json",
        ),
        (Target(score_column="score_v2"), False, None, ".backfill-progress.images.score_v2.json"),
        (
            Target(table="Bird Photos", score_column="qualityScore"),
            False,
            None,
            ".backfill-progress.Bird_Photos.qualityScore.json",
        ),
        (Target(table="../../etc/x"), False, None, ".backfill-progress._etc_x.json"),
    ],
    ids=["default", "public-images", "table", "schema-shard-dry", "score", "quoted", "slashes"],
)
def test_each_target_has_its_own_checkpoint_file_and_the_default_keeps_the_specs(
    target: Target, dry_run: bool, shard: Shard | None, expected: str
) -> None:
    path = checkpoint_path_for(
        Path("run/.backfill-progress.json"), dry_run=dry_run, shard=shard, target=target
    )
    assert path == Path("run") / expected


def test_resuming_against_another_target_is_refused() -> None:
    checkpoint = sample_checkpoint()
    other = Target(table="photos")
    path = Path("cp.json")

    with pytest.raises(CheckpointError) as caught:
        check_resumable(
            checkpoint,
            fingerprint=make_fingerprint(database=DB_URL, target=other, shard=None),
            dry_run=False,
            path=path,
            target_description=describe_target(database=DB_URL, target=other, shard=None),
        )

    message = str(caught.value)
    assert "was written for another target: db.example.com:6543/app images(" in message
    assert "this run targets db.example.com:6543/app photos(" in message
    assert "use another --checkpoint or --restart" in message
    assert SECRET not in message


def test_resuming_a_dry_run_checkpoint_for_a_real_run_is_refused() -> None:
    checkpoint = sample_checkpoint()
    checkpoint.dry_run = True
    with pytest.raises(CheckpointError, match="belongs to a dry run; this is a real run"):
        check_resumable(
            checkpoint, fingerprint=checkpoint.fingerprint, dry_run=False, path=Path("cp.json")
        )


def test_resuming_with_another_detector_is_refused() -> None:
    """One table must not hold scores of two scorers: --resume keeps the run's --detector."""
    checkpoint = sample_checkpoint()
    checkpoint.detector = "heuristic"
    with pytest.raises(CheckpointError) as caught:
        check_resumable(
            checkpoint,
            fingerprint=checkpoint.fingerprint,
            dry_run=False,
            path=Path("cp.json"),
            detector="learned",
        )
    message = str(caught.value)
    assert "written by a run with --detector heuristic; this run uses --detector learned" in message
    assert "resume with --detector heuristic, or --restart" in message
    check_resumable(
        checkpoint,
        fingerprint=checkpoint.fingerprint,
        dry_run=False,
        path=Path("cp.json"),
        detector="heuristic",
    )


def test_the_detector_is_saved_and_an_older_checkpoint_counts_as_heuristic(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cp.json"
    checkpoint = sample_checkpoint()
    checkpoint.detector = "onnx:models/yolo.onnx"
    save_checkpoint(path, checkpoint)
    data = json.loads(path.read_text())
    assert data["detector"] == "onnx:models/yolo.onnx"
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded.detector == "onnx:models/yolo.onnx"
    del data["detector"]  # as written before the key existed
    path.write_text(json.dumps(data))
    older = load_checkpoint(path)
    assert older is not None and older.detector == "heuristic"


def test_matching_checkpoint_is_resumable() -> None:
    checkpoint = sample_checkpoint()
    check_resumable(
        checkpoint, fingerprint=checkpoint.fingerprint, dry_run=False, path=Path("cp.json")
    )


def test_low_water_mark_waits_for_the_slowest_row() -> None:
    mark = LowWaterMark("a0")
    for row_id in ("a1", "a2", "a3"):
        mark.issue(row_id)

    mark.complete("a2")
    assert (mark.mark, mark.in_flight) == ("a0", 2)
    mark.complete("a1")
    assert (mark.mark, mark.in_flight) == ("a2", 1)
    mark.complete("a3")
    assert (mark.mark, mark.in_flight) == ("a3", 0)


def test_low_water_mark_rejects_misuse() -> None:
    mark = LowWaterMark(None)
    mark.issue(1)
    with pytest.raises(ValueError, match="issued twice"):
        mark.issue(1)
    with pytest.raises(ValueError, match="not in flight"):
        mark.complete(2)
    mark.complete(1)
    with pytest.raises(ValueError, match="not in flight"):
        mark.complete(1)


@given(st.data(), st.integers(min_value=0, max_value=60))
def test_low_water_mark_never_passes_an_incomplete_row(data: st.DataObject, count: int) -> None:
    ids = list(range(1, count + 1))
    order = data.draw(st.permutations(ids))
    issue_ahead = data.draw(st.integers(min_value=1, max_value=20))
    mark = LowWaterMark(0)
    issued: list[int] = []
    done: set[int] = set()
    pending = list(order)
    while pending or len(done) < len(issued):
        while len(issued) < min(count, len(done) + issue_ahead):
            issued.append(ids[len(issued)])
            mark.issue(issued[-1])
        ready = [row_id for row_id in pending if row_id in issued]
        row_id = ready[0]
        pending.remove(row_id)
        mark.complete(row_id)
        done.add(row_id)
        prefix = 0
        while prefix < len(issued) and issued[prefix] in done:
            prefix += 1
        assert mark.mark == (issued[prefix - 1] if prefix else 0)
        assert mark.in_flight == len(issued) - len(done)
    assert mark.mark == (count if count else 0)


def test_failed_images_are_one_per_line_and_the_file_is_the_same_json(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = sample_checkpoint()
    checkpoint.failed_images.append(
        FailedImage(id="b7", url=f"https://u:{SECRET}@img/b7.jpg", error='HTTP 500 "x"\nok')
    )
    save_checkpoint(path, checkpoint)
    save_checkpoint(path, checkpoint)  # the second save reuses each entry's encoding

    text = path.read_text()
    data = json.loads(text)

    assert data | {"updatedAt": None} == checkpoint.to_json() | {"updatedAt": None}
    entry_lines = [line for line in text.splitlines() if line.startswith('    {"id": ')]
    assert len(entry_lines) == len(checkpoint.failed_images) == 2
    assert SECRET not in text
    loaded = load_checkpoint(path)
    assert loaded is not None
    assert loaded.failed_images[-1] == FailedImage(
        id="b7", url="https://u:***@img/b7.jpg", error='HTTP 500 "x"\nok'
    )


def test_a_checkpoint_without_failures_is_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = Checkpoint(fingerprint="f", dry_run=False, processed=3, succeeded=3)
    save_checkpoint(path, checkpoint)

    assert json.loads(path.read_text())["failedImages"] == []
    assert load_checkpoint(path) == checkpoint
