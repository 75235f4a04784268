"""Stage manifests: what a stage read (with hashes), how it was set, what it wrote and counted.

A stage's fingerprint hashes its inputs, parameters, prompt versions, models and the settings of
the model it calls (endpoint and sampling, never a secret). `run` skips a stage whose folder
holds a finished manifest with the same fingerprint and outputs that still match their recorded
hashes.

A stage's seconds cover its own work: its heavy libraries (litellm takes seconds to import) are
imported before its clock starts, and that import time is reported apart (`import_seconds`).
"""

from __future__ import annotations

import importlib
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from larrylab.pipeline.records import atomic_writer, file_sha256, json_sha256

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2
STAGES: tuple[str, ...] = ("export", "generate", "filter", "dataset")
_LIBRARIES = ("larrylab", "litellm", "datasets", "datasketch", "jsonschema", "pyarrow", "tqdm")
TIMINGS_COVER = (
    "the stage's own work (reading, checks, model calls, writing), from after its libraries "
    "were imported to its manifest; the import time is import_seconds"
)


class StageInputError(LookupError):
    """A stage's input (the previous stage's output) is missing."""


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries the pipeline's results depend on."""
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def fingerprint(
    stage: str,
    inputs: dict[str, Any],
    params: dict[str, Any],
    prompt_versions: dict[str, str],
    models: dict[str, str],
    llm: dict[str, Any] | None = None,
) -> str:
    """The hash that decides whether a stage must run again."""
    return json_sha256(
        {
            "stage": stage,
            "manifest_version": MANIFEST_VERSION,
            "inputs": inputs,
            "params": params,
            "prompt_versions": prompt_versions,
            "models": models,
            "llm": llm or {},
        }
    )


@dataclass
class Tally:
    """Named counters a stage keeps while it works (printed as its stats table)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        self.counts[name] = self.counts.get(name, 0) + n


@dataclass
class StagePlan:
    """What a stage will read and how it is set, known before it runs.

    `llm` holds the settings of the model the stage calls that shape its answers (model,
    endpoint without credentials, sampling; see `LLMOptions.settings`): a changed endpoint
    reruns the stage.
    """

    stage: str
    directory: Path
    inputs: dict[str, Any]
    params: dict[str, Any]
    prompt_versions: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    llm: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The stage's fingerprint (see `fingerprint`)."""
        return fingerprint(
            self.stage, self.inputs, self.params, self.prompt_versions, self.models, self.llm
        )


@dataclass
class StageResult:
    """A finished (or skipped) stage: its status, counts, manifest and extra tables."""

    stage: str
    status: str
    directory: Path
    counts: dict[str, int]
    manifest: dict[str, Any]
    started_at: datetime
    finished_at: datetime
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def import_libraries(names: Sequence[str]) -> float:
    """Import the modules `names` (if not imported yet); returns the seconds it took."""
    t0 = time.perf_counter()
    for name in names:
        importlib.import_module(name)
    return time.perf_counter() - t0


class StageClock:
    """Wall-clock start and end of a stage's work, as datetimes and seconds.

    The clock starts after `imports` (the stage's heavy libraries, e.g. litellm) are imported,
    so a stage's seconds and throughput do not count library import time; the import time is
    kept in `import_seconds`.
    """

    def __init__(self, imports: Sequence[str] = ()) -> None:
        self.import_seconds = import_libraries(imports)
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()

    def seconds(self) -> float:
        """Seconds since the stage started."""
        return time.perf_counter() - self._t0


def finish_stage(
    plan: StagePlan,
    clock: StageClock,
    *,
    status: str,
    counts: dict[str, int],
    outputs: list[str],
    tables: dict[str, list[dict[str, Any]]] | None = None,
    extra: dict[str, Any] | None = None,
) -> StageResult:
    """Write the stage's manifest (outputs hashed) and return its result."""
    finished = datetime.now(UTC)
    seconds = clock.seconds()
    manifest: dict[str, Any] = {
        "stage": plan.stage,
        "manifest_version": MANIFEST_VERSION,
        "status": status,
        "fingerprint": plan.fingerprint,
        "inputs": plan.inputs,
        "params": plan.params,
        "prompt_versions": plan.prompt_versions,
        "models": plan.models,
        "llm": plan.llm,
        "library_versions": library_versions(),
        "counts": counts,
        "outputs": {name: file_sha256(plan.directory / name) for name in outputs},
        "timings": {
            "started_at": clock.started_at.isoformat(),
            "finished_at": finished.isoformat(),
            "seconds": round(seconds, 3),
            "import_seconds": round(clock.import_seconds, 3),
            "covers": TIMINGS_COVER,
        },
        **(extra or {}),
    }
    write_manifest(plan.directory, manifest)
    return StageResult(
        plan.stage,
        status,
        plan.directory,
        counts,
        manifest,
        clock.started_at,
        finished,
        tables or {},
    )


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write `manifest.json` into `directory` (atomically)."""
    with atomic_writer(directory / MANIFEST_NAME) as fh:
        fh.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest in `directory`, or None if there is none (or it is unreadable)."""
    try:
        data = orjson.loads((directory / MANIFEST_NAME).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_current(plan: StagePlan) -> dict[str, Any] | None:
    """The stage's manifest if it finished with this plan's fingerprint and intact outputs."""
    manifest = read_manifest(plan.directory)
    if manifest is None or manifest.get("status") != "done":
        return None
    if manifest.get("fingerprint") != plan.fingerprint:
        return None
    for name, digest in (manifest.get("outputs") or {}).items():
        path = plan.directory / name
        if not path.exists() or file_sha256(path) != digest:
            return None
    return manifest


def skipped(plan: StagePlan, manifest: dict[str, Any]) -> StageResult:
    """The result of a stage that `run` skipped because its inputs did not change."""
    now = datetime.now(UTC)
    counts = {k: int(v) for k, v in (manifest.get("counts") or {}).items()}
    return StageResult(plan.stage, "skipped", plan.directory, counts, manifest, now, now)


def input_file(directory: Path, name: str, *, stage: str) -> dict[str, str]:
    """`{path, sha256}` of a finished earlier stage's output; StageInputError if missing."""
    path = directory / name
    manifest = read_manifest(directory)
    if not path.exists() or manifest is None:
        raise StageInputError(
            f"no finished {stage} stage in {directory}: run `larrylab pipeline {stage}` first"
        )
    return {"path": str(path), "sha256": file_sha256(path)}
