"""The scorer version: changes with the detector, a threshold or a formula, and with nothing else.

Code changes are made on a copy of the package's `scoring/` folder (the function reads the files,
it never imports them), so the tests see exactly what a release that changed those files would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from backfill_quality.config import DetectorChoice, Thresholds
from backfill_quality.results import CHECK_NAMES
from backfill_quality.scoring import version as v
from backfill_quality.scoring.checks import CHECKS
from tests.support.cli import json_lines, run_cli
from tests.support.table import sample_images

LEARNED, HEURISTIC = DetectorChoice(), DetectorChoice("heuristic")
PACKAGE = Path(v.__file__).resolve().parents[1]


@pytest.fixture
def scoring_copy(tmp_path: Path) -> Path:
    """A copy of backfill_quality/scoring (with its model files) somewhere else on disk."""
    copy = tmp_path / "elsewhere" / "backfill_quality" / "scoring"
    shutil.copytree(PACKAGE / "scoring", copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def versions(scoring_dir: Path, onnx: DetectorChoice | None = None) -> dict[str, str]:
    choices = {"learned": LEARNED, "heuristic": HEURISTIC} | ({"onnx": onnx} if onnx else {})
    return {
        name: v.scorer_version(choice, Thresholds(), scoring_dir=scoring_dir)
        for name, choice in choices.items()
    }


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_same_in_other_processes_and_at_another_path(scoring_copy: Path) -> None:
    here = v.scorer_version(LEARNED, Thresholds())
    assert here.startswith("learned-") and len(here) == len("learned-") + v.HASH_CHARS
    program = (
        "from backfill_quality.config import DetectorChoice, Thresholds;"
        "from backfill_quality.scoring.version import scorer_version;"
        "print(scorer_version(DetectorChoice(), Thresholds()))"
    )
    for seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == here
        assert "numpy" not in out.stderr
    assert versions(scoring_copy)["learned"] == here  # no path enters it


def test_the_main_process_computes_it_without_loading_numpy() -> None:
    program = (
        "import sys;from backfill_quality.config import DetectorChoice, Thresholds;"
        "from backfill_quality.scoring.version import scorer_version;"
        "scorer_version(DetectorChoice(), Thresholds());print('numpy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_every_threshold_changes_it() -> None:
    base = Thresholds()
    seen = {v.scorer_version(LEARNED, base)}
    for field in fields(base):
        value = getattr(base, field.name)
        changed = replace(base, **{field.name: value + (1 if isinstance(value, int) else 0.01)})
        seen.add(v.scorer_version(LEARNED, changed))
    assert len(seen) == len(fields(base)) + 1


def test_the_detector_and_its_model_change_it(tmp_path: Path, scoring_copy: Path) -> None:
    model_a, model_b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    model_a.write_bytes(b"model a")
    model_b.write_bytes(b"model b")
    onnx_a = DetectorChoice("onnx", model_a)
    all_versions = {
        v.scorer_version(LEARNED, Thresholds()),
        v.scorer_version(HEURISTIC, Thresholds()),
        v.scorer_version(onnx_a, Thresholds()),
        v.scorer_version(DetectorChoice("onnx", model_b), Thresholds()),
        v.scorer_version(DetectorChoice("onnx", model_a, bird_class=3), Thresholds()),
    }
    assert len(all_versions) == 5
    moved = tmp_path / "moved.onnx"
    shutil.copy(model_a, moved)  # the same model elsewhere: the same version
    assert v.scorer_version(DetectorChoice("onnx", moved), Thresholds()) == v.scorer_version(
        onnx_a, Thresholds()
    )

    before = versions(scoring_copy)
    weights = scoring_copy / "weights" / "nanodet-coco-int8.onnx"
    weights.write_bytes(weights.read_bytes() + b"\0")  # new weights for the learned detector
    after = versions(scoring_copy)
    assert after["learned"] != before["learned"]
    assert after["heuristic"] == before["heuristic"]


def test_a_formula_change_changes_it_and_only_for_the_detectors_that_use_it(
    tmp_path: Path, scoring_copy: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    onnx = DetectorChoice("onnx", model)
    before = versions(scoring_copy, onnx)

    edit(scoring_copy / "checks.py", "MULTIPLE_BIRDS_SCORE = 75", "MULTIPLE_BIRDS_SCORE = 70")
    after_checks = versions(scoring_copy, onnx)
    assert all(after_checks[name] != before[name] for name in before)

    # the heuristic is the learned detector's fallback; the YOLO path does not use it
    edit(
        scoring_copy / "detectors" / "heuristic.py",
        "def ",
        "def _unused() -> None:\n    pass\n\n\ndef ",
    )
    after_heuristic = versions(scoring_copy, onnx)
    assert after_heuristic["heuristic"] != after_checks["heuristic"]
    assert after_heuristic["learned"] != after_checks["learned"]
    assert after_heuristic["onnx"] == after_checks["onnx"]


def test_a_new_helper_module_is_covered_without_a_list(scoring_copy: Path) -> None:
    before = versions(scoring_copy)
    (scoring_copy / "helper.py").write_text("FACTOR = 1.0\n")
    assert versions(scoring_copy) == before  # not imported by any formula: not part of it
    edit(
        scoring_copy / "checks.py",
        "from backfill_quality.config import Thresholds",
        "from backfill_quality.config import Thresholds\n"
        "from backfill_quality.scoring.helper import FACTOR",
    )
    imported = versions(scoring_copy)
    (scoring_copy / "helper.py").write_text("FACTOR = 2.0\n")
    assert versions(scoring_copy)["heuristic"] != imported["heuristic"]
    assert v.formula_modules(["checks.py"], scoring_copy) == ["checks.py", "helper.py"]


def test_unrelated_changes_leave_it_alone(scoring_copy: Path) -> None:
    before = versions(scoring_copy)
    # outside the formulas: annotation, the pool's entry point, another detector's module
    (scoring_copy / "annotate.py").write_text("# rewritten\n")
    edit(
        scoring_copy / "score.py",
        "def score_image(",
        "def unused() -> None: ...\n\n\ndef score_image(",
    )
    edit(
        scoring_copy / "detectors" / "factory.py",
        "TRIAL_PICTURE_SIZE = (48, 64, 3)",
        "TRIAL_PICTURE_SIZE = (40, 60, 3)",
    )
    # inside a formula module: comments, blank lines, docstrings and layout only
    checks = scoring_copy / "checks.py"
    edit(checks, "HIGH_MIN_SCORE = 80", "# a comment\n\nHIGH_MIN_SCORE = 80  # high from here")
    edit(
        checks, '"""Round to an integer and clamp to 0-100."""', '"""Round, then clamp (0-100)."""'
    )
    edit(
        checks,
        "    return max(0, min(100, round_half_up(value)))",
        "    return max(0, min(100,\n        round_half_up(value)))",
    )
    assert versions(scoring_copy) == before


def test_the_check_names_of_the_results_table_are_the_checks() -> None:
    assert tuple(check.name for check in CHECKS) == CHECK_NAMES


def test_score_json_shows_the_version_a_threshold_or_detector_makes(tmp_path: Path) -> None:
    photo = tmp_path / "bird.jpg"
    photo.write_bytes(sample_images()[0].data)

    def version_of(*options: str) -> str:
        result = run_cli("score", "--json", str(photo), *options, cwd=tmp_path, timeout_s=120)
        assert result.exit_code == 0, result.output
        [record] = json_lines(result.stdout)
        return str(record["scorerVersion"])

    default = version_of()
    assert default == v.scorer_version(LEARNED, Thresholds())
    assert version_of() == default
    stricter = version_of("--threshold", "min_short_side=300")
    assert stricter == v.scorer_version(LEARNED, Thresholds(min_short_side=300)) != default
    assert version_of("--detector", "heuristic") == v.scorer_version(HEURISTIC, Thresholds())
    assert len({default, stricter, version_of("--detector", "heuristic")}) == 3


def test_the_measurement_version_ignores_thresholds_and_formulas(scoring_copy: Path) -> None:
    stricter = replace(Thresholds(), min_pixels=500_000)
    one = v.versions(LEARNED, Thresholds(), scoring_dir=scoring_copy)
    two = v.versions(LEARNED, stricter, scoring_dir=scoring_copy)
    assert one.scorer != two.scorer and one.measurement == two.measurement
    assert one.measurement.startswith("learned-m")
    assert v.measurement_version(HEURISTIC, scoring_dir=scoring_copy) != one.measurement
    edit(scoring_copy / "checks.py", "HIGH_MIN_SCORE = 80", "HIGH_MIN_SCORE = 81")
    three = v.versions(LEARNED, Thresholds(), scoring_dir=scoring_copy)
    assert three.measurement == one.measurement and three.scorer != one.scorer
    edit(scoring_copy / "imaging.py", "import io", "import io\nimport os")
    assert v.measurement_version(LEARNED, scoring_dir=scoring_copy) != one.measurement
