"""Frozen settings with named defaults and validation. Environment variables are read here only."""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from backfill_quality.errors import ConfigError

DEFAULT_TABLE = "images"
DEFAULT_ID_COLUMN = "id"
DEFAULT_URL_COLUMN = "url"
DEFAULT_SCORE_COLUMN = "quality_score"
DEFAULT_CHECKPOINT = Path(".backfill-progress.json")
DEFAULT_BATCH_SIZE = 50
MAX_BATCH_SIZE = 50
CONCURRENCY_AUTO = "auto"
DEFAULT_CONCURRENCY = CONCURRENCY_AUTO
MAX_CONCURRENCY = 1024
DEFAULT_MAX_CONCURRENCY = 64
"""The ceiling of `--concurrency auto` (`--max-concurrency`)."""
HOST_SHARE_OF_MAX = 0.75
"""With `--concurrency auto`, one host may hold at most this share of `--max-concurrency`
(`--max-per-host` overrides it): one slow host among many cannot take every slot."""
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 25_000_000
DEFAULT_RETRIES = 3
MAX_URL_LENGTH = 8192
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_DEMO_ROWS = 300
DEFAULT_TREND_PERIODS = 12  # status --trend: a quarter by week, a year by month
DEFAULT_TREND_EVERY = "week"
TREND_BY_SCORED_AT = "scored_at"  # status --trend --by: when each image was scored
DEFAULT_POLL_INTERVAL_S = 30.0  # watch: look for unscored rows at least this often
DEFAULT_RETRY_FAILED_AFTER_S = 3600.0  # watch: try a failed row again after this long
DEFAULT_DETECTOR = "learned"
COCO_BIRD_CLASS = 14
"""The class index of "bird" in the 80 COCO classes most detectors are trained on."""
DETECTOR_KINDS = ("learned", "heuristic", "onnx")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The scoring thresholds of SPEC section 5 (all configurable)."""

    min_bird_area: float = 0.15
    max_bird_area: float = 0.80
    min_visible_ratio: float = 0.60
    min_pixels: int = 120_000
    min_short_side: int = 400
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    edge_margin: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_bird_area < self.max_bird_area < 1.0:
            raise ConfigError("bird area thresholds need 0 <= min < max < 1")
        if not 0.0 < self.min_visible_ratio <= 1.0:
            raise ConfigError("min visible ratio must be in (0, 1]")
        if not 0.0 < self.min_brightness < self.max_brightness < 255.0:
            raise ConfigError("brightness thresholds need 0 < min < max < 255")
        if self.min_pixels <= 0 or self.min_short_side < 0:
            raise ConfigError("resolution thresholds must be positive")
        if not 0.0 <= self.edge_margin < 0.5:
            raise ConfigError("edge margin must be in [0, 0.5)")


MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")
TABLE_SYNTAX = (
    "expected TABLE or SCHEMA.TABLE, each part as written (case kept) or in double quotes when "
    'it holds a dot or a quote, e.g. media.photos or "My Schema"."photos.v2"'
)


def quote_name(name: str) -> str:
    """`name` as PostgreSQL's quote_ident writes it: bare when plain lower case, else quoted."""
    if _PLAIN_IDENTIFIER.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class OrderBy:
    """`--order-by COLUMN [--descending]`: the priority order of a run (ties by the key)."""

    column: str
    descending: bool = False

    def __post_init__(self) -> None:
        if not self.column or "\x00" in self.column:
            raise ConfigError(f"--order-by: {self.column!r} is not a usable column name")
        if len(self.column.encode()) > MAX_IDENTIFIER_BYTES:
            raise ConfigError(f"--order-by: {self.column!r} is longer than PostgreSQL allows")

    def __str__(self) -> str:
        return f"{self.column} descending" if self.descending else self.column

    def cli_options(self) -> list[str]:
        """The options that ask for this order: `--order-by created_at --descending`."""
        return ["--order-by", shlex.quote(self.column)] + (
            ["--descending"] if self.descending else []
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Which table and columns the backfill reads and writes. `schema` None: the table is found
    through the search_path, as PostgreSQL finds an unqualified name."""

    table: str = DEFAULT_TABLE
    id_column: str = DEFAULT_ID_COLUMN
    url_column: str = DEFAULT_URL_COLUMN
    score_column: str = DEFAULT_SCORE_COLUMN
    schema: str | None = None

    def __post_init__(self) -> None:
        for label, name in (
            ("--table", self.table),
            ("--table (schema)", self.schema),
            ("--id-column", self.id_column),
            ("--url-column", self.url_column),
            ("--score-column", self.score_column),
        ):
            if name is None and label == "--table (schema)":
                continue
            if not name or "\x00" in name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
                raise ConfigError(f"{label}: {name!r} is not a usable PostgreSQL identifier")

    def cli_options(self) -> list[str]:
        """The options that name this target, where they differ from the defaults."""
        options: list[str] = []
        if self.schema or self.table != DEFAULT_TABLE:
            options += ["--table", self.label]
        for option, value, default in (
            ("--id-column", self.id_column, DEFAULT_ID_COLUMN),
            ("--url-column", self.url_column, DEFAULT_URL_COLUMN),
            ("--score-column", self.score_column, DEFAULT_SCORE_COLUMN),
        ):
            if value != default:
                options += [option, value]
        return [shlex.quote(option) for option in options]

    @property
    def label(self) -> str:
        """The table as SQL (and `--table`) would name it: `media.photos`, `"My Schema"."T"`."""
        table = quote_name(self.table)
        return f"{quote_name(self.schema)}.{table}" if self.schema else table


def parse_table_option(text: str) -> tuple[str | None, str]:
    """`--table` -> (schema or None, table). Parts are split on dots outside double quotes and
    kept as written (no case folding); a quoted part may hold dots, `""` is a quote."""
    parts: list[str] = []
    i = 0
    while True:
        part, i = _name_part(text, i)
        parts.append(part)
        if i == len(text):
            break
        if text[i] != ".":
            raise ConfigError(f"--table {text!r}: {TABLE_SYNTAX}")
        i += 1
    if len(parts) > 2:
        raise ConfigError(f"--table {text!r}: {TABLE_SYNTAX}")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _name_part(text: str, start: int) -> tuple[str, int]:
    """One dot-separated part of `text` from `start`: (the name, the index after it)."""
    if text.startswith('"', start):
        pieces: list[str] = []
        i = start + 1
        while (end := text.find('"', i)) >= 0:
            pieces.append(text[i:end])
            if not text.startswith('""', end):
                name = '"'.join(pieces)
                if name:
                    return name, end + 1
                break
            i = end + 2
        raise ConfigError(f"--table {text!r}: {TABLE_SYNTAX}")
    end = text.find(".", start)
    end = len(text) if end < 0 else end
    name = text[start:end]
    if not name or '"' in name:
        raise ConfigError(f"--table {text!r}: {TABLE_SYNTAX}")
    return name, end


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """How images are downloaded."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES
    retries: int = DEFAULT_RETRIES
    max_rps: float | None = None
    concurrency: int | None = None
    """Downloads in flight; None: `auto` (an adaptive level between 1 and max_concurrency)."""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_per_host: int | None = None
    """Downloads in flight to one host; None: HOST_SHARE_OF_MAX of max_concurrency (auto) or
    the fixed concurrency."""
    deny_private_networks: bool = False
    max_redirects: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError("--timeout must be greater than 0 seconds")
        if self.max_bytes < 1:
            raise ConfigError("--max-bytes must be at least 1")
        if not 0 <= self.retries <= 20:
            raise ConfigError("--retries must be between 0 and 20")
        if self.max_rps is not None and not self.max_rps > 0:
            raise ConfigError("--max-rps must be greater than 0")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(
                f"--concurrency must be auto or between 1 and {MAX_CONCURRENCY}, "
                f"not {self.concurrency}"
            )
        if not 1 <= self.max_concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"--max-concurrency must be between 1 and {MAX_CONCURRENCY}")
        if self.max_per_host is not None and not 1 <= self.max_per_host <= MAX_CONCURRENCY:
            raise ConfigError(f"--max-per-host must be between 1 and {MAX_CONCURRENCY}")

    @property
    def is_adaptive(self) -> bool:
        """`--concurrency auto`: the number in flight finds its own level."""
        return self.concurrency is None

    @property
    def ceiling(self) -> int:
        """The most downloads ever in flight at once: the fixed number, or the auto ceiling."""
        return self.max_concurrency if self.concurrency is None else self.concurrency

    @property
    def per_host_limit(self) -> int:
        """The most downloads in flight to one host (never above `ceiling`)."""
        if self.max_per_host is not None:
            return min(self.max_per_host, self.ceiling)
        if self.concurrency is not None:
            return self.concurrency
        return max(1, math.ceil(HOST_SHARE_OF_MAX * self.max_concurrency))


def parse_concurrency(text: str) -> int | None:
    """`auto` -> None; a whole number 1..MAX_CONCURRENCY -> itself; ConfigError otherwise."""
    value = text.strip().lower()
    if value == CONCURRENCY_AUTO:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_CONCURRENCY:
        raise ConfigError(
            f"--concurrency {text!r}: expected auto or a whole number from 1 to "
            f"{MAX_CONCURRENCY} (1 = one image at a time, like the original)"
        )
    return number


@dataclass(frozen=True, slots=True)
class Shard:
    """Worker K of N (0-based index) over a contiguous slice of the key space."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard: need 0 <= K < N, got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class DetectorChoice:
    """Which subject detector finds the bird: the learned models (default), the NumPy heuristic,
    or the user's own YOLO-family ONNX model (`onnx:PATH`) whose class `bird_class` is a bird."""

    kind: str = DEFAULT_DETECTOR
    model_path: Path | None = None
    bird_class: int = COCO_BIRD_CLASS

    def __post_init__(self) -> None:
        if self.kind not in DETECTOR_KINDS:
            raise ConfigError(f"--detector {self.kind!r}: expected learned, heuristic or onnx:PATH")
        if (self.kind == "onnx") != (self.model_path is not None):
            raise ConfigError("--detector onnx:PATH needs the path of an ONNX model file")
        if self.bird_class < 0:
            raise ConfigError("--bird-class must be 0 or more")

    def __str__(self) -> str:
        return f"onnx:{self.model_path}" if self.kind == "onnx" else self.kind


def parse_detector(text: str, bird_class: int | None = None) -> DetectorChoice:
    """`learned`, `heuristic` or `onnx:PATH` (with `bird_class`, default COCO's) ->
    DetectorChoice; ConfigError otherwise."""
    kind, sep, path = text.strip().partition(":")
    if sep and kind == "onnx":
        if not path:
            raise ConfigError("--detector onnx:PATH needs the path of an ONNX model file")
        chosen_class = COCO_BIRD_CLASS if bird_class is None else bird_class
        return DetectorChoice("onnx", Path(path).expanduser(), chosen_class)
    if sep or kind not in ("learned", "heuristic"):
        raise ConfigError(
            f"--detector {text!r}: expected learned, heuristic or onnx:PATH "
            "(for example --detector onnx:./yolov8n.onnx)"
        )
    if bird_class is not None:
        raise ConfigError(
            f"--bird-class applies to --detector onnx:PATH only (the {kind} detector knows "
            "what a bird is)"
        )
    return DetectorChoice(kind)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything one `run` needs."""

    database_url: str
    target: Target = field(default_factory=Target)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    batch_size: int = DEFAULT_BATCH_SIZE
    delay_ms: int = 0
    dry_run: bool = False
    resume: bool = False
    restart: bool = False
    retry_failed: bool = False
    checkpoint_path: Path = DEFAULT_CHECKPOINT
    limit: int | None = None
    shard: Shard | None = None
    workers: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    detector: DetectorChoice = field(default_factory=DetectorChoice)
    order_by: OrderBy | None = None
    """`--order-by`: take rows in this column's order (None: the key's order)."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}")
        if self.delay_ms < 0:
            raise ConfigError("--delay must be 0 or more milliseconds")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.restart and (self.resume or self.retry_failed):
            raise ConfigError("--restart cannot be combined with --resume or --retry-failed")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("--workers must be at least 1")


CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def available_cpus(
    cgroup_v2_cpu_max: Path = CGROUP_V2_CPU_MAX, cgroup_v1_cpu: Path = CGROUP_V1_CPU
) -> int:
    """The CPUs this process may use, the default number of scoring processes: its affinity
    mask (taskset, cpusets), capped by a container's CPU quota rounded up. os.cpu_count() counts
    the whole host: a pod limited to 2 CPUs on a 64-core node would start 64 processes."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_v2_cpu_max, cgroup_v1_cpu)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def _cgroup_cpu_quota(cgroup_v2_cpu_max: Path, cgroup_v1_cpu: Path) -> float | None:
    """CPUs allowed by the cgroup's quota (v2 `cpu.max`, else v1 CFS files); None: no quota."""
    try:
        quota, period = cgroup_v2_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (cgroup_v1_cpu / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup_v1_cpu / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def database_url_from_env() -> str:
    """The DATABASE_URL environment variable, or '' to let libpq read the PG* variables."""
    return os.environ.get("DATABASE_URL", "")


def thresholds_with_overrides(overrides: list[str]) -> Thresholds:
    """Thresholds from `NAME=VALUE` pairs (`min_short_side=300`); ConfigError names a bad one."""
    values: dict[str, float | int] = {}
    known = {name: type(getattr(Thresholds(), name)) for name in Thresholds.__dataclass_fields__}
    for item in overrides:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise ConfigError(
                f"--threshold {item!r}: expected NAME=VALUE with NAME one of {', '.join(known)}"
            )
        try:
            values[name] = known[name](raw.strip())
        except ValueError:
            raise ConfigError(f"--threshold {item!r}: {raw!r} is not a number") from None
    return Thresholds(**values)  # type: ignore[arg-type]


def parse_shard(text: str) -> Shard:
    """`K/N` (0-based K) -> Shard; ConfigError with an example otherwise."""
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError(text)
        return Shard(index=int(index), count=int(count))
    except ValueError:
        raise ConfigError(
            f"--shard {text!r}: expected K/N with 0 <= K < N, for example --shard 0/4"
        ) from None


def resolve_shard(shard: str | None, shard_count: int | None) -> Shard | None:
    """The shard from --shard K/N, or from a Kubernetes Indexed Job's JOB_COMPLETION_INDEX plus
    --shard-count N; None for an unsharded run."""
    if shard:
        return parse_shard(shard)
    if shard_count is None:
        return None
    index = os.environ.get("JOB_COMPLETION_INDEX")
    if index is None:
        raise ConfigError(
            "--shard-count needs the worker's index: set --shard K/N, or run as a Kubernetes "
            "Indexed Job (which sets JOB_COMPLETION_INDEX)"
        )
    try:
        return Shard(index=int(index), count=shard_count)
    except ValueError:
        raise ConfigError(f"JOB_COMPLETION_INDEX={index!r} is not a whole number") from None
