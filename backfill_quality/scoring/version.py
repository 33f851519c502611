"""The scorer and measurement versions: strings that change whenever a score (or what it was
measured from) could change, derived, never typed.

`measurement_version(detector)` hashes what the measurements (width, height, brightness, the
subject, presence: `models.Measurements`) are a function of besides the image: the detector's kind
and model files, and the code of `imaging.py`, the detector's module and every scoring module they
import. No threshold enters it: neither decoding nor any detector reads one. Same measurement
version: the five checks can be recomputed from the stored measurements. (`score.py`, the pool's
entry point that calls them, stays outside both versions, as before.)

`scorer_version(detector, thresholds)` hashes (SHA-256) what a score is a function of besides
the image:
- the measurement version (the detector's kind, the SHA-256 of its model files — the shipped
  weights, or the user's `onnx:PATH` file with its `--bird-class` — and the measuring code);
- every threshold, by name and value;
- the code of the formulas: `checks.py` with every module of `backfill_quality.scoring` it
  imports, found by reading the imports (so a new helper module is covered without a list to
  maintain). Comments, blank lines, docstrings and formatting do not count: the source is hashed
  as Python tokens.

Nothing else enters it: no path, no time, no hash seed, no module outside those (the CLI, the
database code, the fetcher, `annotate.py`), so it is the same in every process and on every
machine running the same code and models. A new interpreter that tokenizes differently (Python
3.12's f-string tokens, say) gives another version: the tool then treats its scores as stale,
which is the safe side. Library versions (NumPy, Pillow, ONNX Runtime) are deliberately left out.

Read from files, never imported: the main process of a run computes it without loading NumPy.
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from dataclasses import dataclass, fields
from pathlib import Path

from backfill_quality.config import DetectorChoice, Thresholds
from backfill_quality.errors import ModelError

SCORING_DIR = Path(__file__).resolve().parent
SCORING_PACKAGE = "backfill_quality.scoring"
FORMULA_ROOTS = ("checks.py",)
MEASURING_ROOTS = ("imaging.py",)
DETECTOR_MODULES = {
    "learned": "detectors/learned.py",
    "heuristic": "detectors/heuristic.py",
    "onnx": "detectors/yolo.py",
}
HASH_CHARS = 16
_SKIPPED_TOKENS = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER})
_LAYOUT_TOKENS = frozenset({tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE})


@dataclass(frozen=True, slots=True)
class Versions:
    """Both versions of one scorer configuration."""

    scorer: str
    measurement: str


def scorer_version(
    detector: DetectorChoice, thresholds: Thresholds, *, scoring_dir: Path = SCORING_DIR
) -> str:
    """'<detector kind>-<16 hex digits>', e.g. 'learned-3f2a9c1d8e7b4a60'."""
    return versions(detector, thresholds, scoring_dir=scoring_dir).scorer


def measurement_version(detector: DetectorChoice, *, scoring_dir: Path = SCORING_DIR) -> str:
    """'<detector kind>-m<16 hex digits>': what the stored measurements were taken with."""
    return f"{detector.kind}-m{_digest(_measuring_identity(detector, scoring_dir))}"


def versions(
    detector: DetectorChoice, thresholds: Thresholds, *, scoring_dir: Path = SCORING_DIR
) -> Versions:
    """The scorer version and the measurement version it is built on (hashing the model files
    once)."""
    measurement = measurement_version(detector, scoring_dir=scoring_dir)
    parts = [f"measurement={measurement}"]
    parts += [f"threshold {f.name}={getattr(thresholds, f.name)!r}" for f in fields(thresholds)]
    for relative in formula_modules(list(FORMULA_ROOTS), scoring_dir):
        parts.append(f"module {relative}={_code_hash(scoring_dir / relative)}")
    return Versions(scorer=f"{detector.kind}-{_digest(parts)}", measurement=measurement)


def _digest(parts: list[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:HASH_CHARS]


def _measuring_identity(detector: DetectorChoice, scoring_dir: Path) -> list[str]:
    parts = [f"detector={detector.kind}"]
    parts += [f"model {name}={sha}" for name, sha in _model_hashes(detector, scoring_dir)]
    roots = [*MEASURING_ROOTS, DETECTOR_MODULES[detector.kind]]
    for relative in formula_modules(roots, scoring_dir):
        parts.append(f"module {relative}={_code_hash(scoring_dir / relative)}")
    return parts


def _model_hashes(detector: DetectorChoice, scoring_dir: Path) -> list[tuple[str, str]]:
    if detector.kind == "heuristic":
        return []
    if detector.kind == "onnx":
        assert detector.model_path is not None  # DetectorChoice guarantees it
        return [(f"user:bird_class={detector.bird_class}", _file_sha256(detector.model_path))]
    weights = sorted((scoring_dir / "weights").glob("*.onnx"))
    return [(path.name, _file_sha256(path)) for path in weights]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as model:
            for block in iter(lambda: model.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ModelError(
            f"model file {path} cannot be read ({exc.strerror or exc}): reinstall "
            "backfill-quality, or check --detector onnx:PATH"
        ) from exc
    return digest.hexdigest()


def formula_modules(roots: list[str], scoring_dir: Path = SCORING_DIR) -> list[str]:
    """The roots and every scoring module they import, directly or not (paths relative to
    `scoring_dir`, sorted)."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        relative = pending.pop()
        if relative in seen:
            continue
        seen.add(relative)
        pending.extend(_scoring_imports(scoring_dir / relative, scoring_dir))
    return sorted(seen)


def _scoring_imports(path: Path, scoring_dir: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith(SCORING_PACKAGE + "."):
                module = name[len(SCORING_PACKAGE) + 1 :].replace(".", "/")
                if (scoring_dir / f"{module}.py").is_file():
                    found.append(f"{module}.py")
    return found


def _code_hash(path: Path) -> str:
    """SHA-256 of the module's tokens without comments, blank lines and docstrings."""
    source = path.read_text(encoding="utf-8")
    docstrings = _docstring_lines(source)
    kept: list[str] = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _SKIPPED_TOKENS:
            continue
        if token.type == tokenize.STRING and token.start[0] in docstrings:
            continue
        text = "" if token.type in _LAYOUT_TOKENS else token.string  # not the indent's width
        kept.append(f"{tokenize.tok_name[token.type]}:{text}")
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()


def _docstring_lines(source: str) -> set[int]:
    """First lines of the string literals that stand alone as statements (docstrings)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            lines.add(node.lineno)
    return lines
