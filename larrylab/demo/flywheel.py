"""The demo's second half: rated threads become a dataset, a tiny fine-tune, a gate decision.

Every step calls the same functions as the CLI (`larrylab pipeline run`, `pipeline train`,
`pipeline package`, `gate`, `promote`). Two things differ from a real deployment and the demo
says so as it runs: the "large model" that generates and judges is the SIMULATED Gemini-like
upstream, and the tiny adapter cannot be served without an Ollama server, so the registry entry
of the new candidate points at the SIMULATED Ollama-like upstream.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlmodel import Session

from larrylab.config import ModelSpec
from larrylab.experiments import update_experiment
from larrylab.release import (
    GateDecisionPublic,
    RolloutPublic,
    promote,
    register_trained_model,
    update_lineage,
)

# litellm's OpenAI provider wants a key even for a local endpoint; the simulator ignores it.
DEMO_KEY_ENV = "LARRYLAB_DEMO_API_KEY"
CANDIDATE = "larry-tiny"
ACTOR = "larrylab demo"
# The counts each stage line shows (every count is in the stage's manifest.json).
_SHOWN: dict[str, tuple[str, ...]] = {
    "export": ("threads_rated", "threads_vetoed", "threads_exported"),
    "generate": ("generator_requests", "variations", "requests_failed"),
    "filter": ("input_generated", "kept_generated", "kept"),
    "dataset": ("train", "validation", "source_threads"),
}


@dataclass(frozen=True)
class FlywheelOptions:
    """How much work the flywheel does (the CI test runs a smaller version)."""

    epochs: int = 3
    eval_limit: int | None = None
    generate_limit: int | None = None
    canary_weight: float = 10.0
    model: str = "tiny"  # "tiny" or "smollm2" (see larrylab.demo.smollm2)
    max_tokens: int | None = None  # cap on each reply of the model under evaluation


DEMO_MODELS = ("tiny", "smollm2")


def flywheel_options(
    model: str = "tiny", *, epochs: int = 3, eval_limit: int | None = None
) -> FlywheelOptions:
    """The flywheel's options for `larrylab demo --model MODEL`; ValueError for another model.

    `smollm2` scores the first 2 samples of each category unless `eval_limit` says otherwise,
    caps each evaluated reply at 64 tokens and trains its own bounded run (`epochs` is the tiny
    model's)."""
    if model == "tiny":
        return FlywheelOptions(epochs=epochs, eval_limit=eval_limit)
    if model == "smollm2":
        from larrylab.demo.smollm2 import DEFAULT_EVAL_LIMIT, MAX_TOKENS

        limit = DEFAULT_EVAL_LIMIT if eval_limit is None else eval_limit
        return FlywheelOptions(eval_limit=limit, model=model, max_tokens=MAX_TOKENS)
    raise ValueError(f"--model must be one of {', '.join(DEMO_MODELS)}, not {model!r}")


@dataclass
class FlywheelResult:
    """What the flywheel produced."""

    stages: dict[str, dict[str, int]] = field(default_factory=dict)
    dataset_dir: Path | None = None
    train_metrics: dict[str, Any] = field(default_factory=dict)
    modelfile: Path | None = None
    gate: GateDecisionPublic | None = None
    rollout: RolloutPublic | None = None
    timings: dict[str, float] = field(default_factory=dict)
    check_rates: list[Any] = field(default_factory=list)  # smollm2 mode: CheckComparison rows


def run_pipeline_stages(
    directory: Path, engine: Engine, generator_url: str, console: Console, opts: FlywheelOptions
) -> FlywheelResult:
    """Export, generate, filter and build the dataset, printing each stage's counts."""
    from larrylab.pipeline.context import PipelineContext
    from larrylab.pipeline.generate import GenerateOptions
    from larrylab.pipeline.llm import LLMOptions
    from larrylab.pipeline.recording import record_stage
    from larrylab.pipeline.run import RunOptions, run_pipeline

    os.environ.setdefault(DEMO_KEY_ENV, "simulated")
    out = directory / "pipeline"
    ctx = PipelineContext(
        out=out,
        llm=LLMOptions(
            model="openai/gemini-2.5-flash",
            api_base=f"{generator_url}/v1",
            api_key_env=DEMO_KEY_ENV,
            concurrency=16,
        ),
    )
    result = FlywheelResult()

    def show(stage: Any) -> None:
        record_stage(engine, str(out.resolve()), stage)
        result.stages[stage.stage] = dict(stage.counts)
        shown = [k for k in _SHOWN.get(stage.stage, ()) if k in stage.counts]
        shown += [k for k, v in stage.counts.items() if k.startswith("dropped_") and v]
        counts = ", ".join(f"{k.replace('_', ' ')} {stage.counts[k]}" for k in shown)
        console.print(f"  {stage.stage}: {stage.status}; {counts}")

    options = RunOptions(generate=GenerateOptions(limit=opts.generate_limit))
    stages = run_pipeline(ctx, engine, options, show)
    last = stages[-1]
    if last.stage != "dataset" or last.status == "partial":
        raise RuntimeError(f"the pipeline stopped at {last.stage} ({last.status})")
    result.dataset_dir = last.directory
    return result


def train_and_register(
    directory: Path,
    engine: Engine,
    candidate_url: str,
    result: FlywheelResult,
    console: Console,
    opts: FlywheelOptions,
) -> None:
    """Train the tiny LoRA adapter on the dataset, register it and write its Modelfile."""
    import torch

    from larrylab.cli import lineage_for
    from larrylab.training import TrainOptions, create_command, modelfile_text, plan_package, train

    assert result.dataset_dir is not None
    torch.set_num_threads(1)  # the tiny model: more threads only add overhead on small CPUs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renames, not ours
        trained = train(
            TrainOptions(
                dataset=result.dataset_dir, out=directory / "train", tiny=True, epochs=opts.epochs
            ),
            log=lambda line: console.print(f"  {line}"),
        )
    result.train_metrics = trained.metrics
    lineage = lineage_for(trained)
    with Session(engine) as session:
        register_trained_model(
            session=session,
            name=CANDIDATE,
            spec=ModelSpec(api="openai", base_url=f"{candidate_url}/v1", model=CANDIDATE),
            lineage=lineage,
            actor=ACTOR,
            reason=f"tiny LoRA adapter trained on {result.dataset_dir}",
        )
        update_lineage(
            session=session,
            name=CANDIDATE,
            lineage={
                "serving": {
                    **lineage["serving"],
                    "base_url": f"{candidate_url}/v1",
                    "model": CANDIDATE,
                    "note": "demo: served by the SIMULATED Ollama-like upstream (no Ollama "
                    "server offline); package the adapter with the Modelfile to serve it",
                }
            },
        )
    plan = plan_package(trained.adapter_dir, CANDIDATE)
    result.modelfile = trained.out_dir / "Modelfile"
    result.modelfile.write_text(modelfile_text(plan))
    console.print(f"  registered {CANDIDATE!r}; Modelfile {result.modelfile}")
    console.print(f"  on a machine with Ollama: {create_command(result.modelfile, CANDIDATE)}")
    console.print(
        f"  [yellow]offline, {CANDIDATE!r} is served by the SIMULATED Ollama-like upstream "
        f"({candidate_url})[/yellow]"
    )


def gate_and_promote(
    directory: Path,
    db_url: str,
    engine: Engine,
    *,
    route: str,
    experiment: str,
    result: FlywheelResult,
    console: Console,
    opts: FlywheelOptions,
    candidate: str = CANDIDATE,
) -> None:
    """Conclude the A/B test, gate the candidate against the route's model, promote if it passed."""
    from larrylab.evals.gate import run_gate

    with Session(engine) as session:
        update_experiment(session=session, name=experiment, status="stopped")
    console.print(f"  stopped {experiment} (its data fed the pipeline)")
    result.gate = run_gate(
        database_url=db_url,
        candidate=candidate,
        route=route,
        log_dir=directory / "eval-logs",
        limit=opts.eval_limit,
        actor=ACTOR,
        max_tokens=opts.max_tokens,
    )
    if opts.model == "smollm2":
        from larrylab.demo.smollm2 import gate_interval_table

        console.print(gate_interval_table(result.gate))
    else:
        console.print(gate_table(result.gate))
    if not result.gate.passed:
        console.print(f"  [red]gate refused {candidate}[/red]: " + "; ".join(result.gate.reasons))
        return
    with Session(engine) as session:
        result.rollout = promote(
            session=session,
            candidate=candidate,
            route=route,
            canary_weight=opts.canary_weight,
            actor=ACTOR,
        )
    steps = " -> ".join(f"{s:g}%" for s in result.rollout.steps)
    console.print(
        f"  [green]gate passed[/green]: canary {candidate} at {result.rollout.weight:g}% of "
        f"route {route} (experiment {result.rollout.experiment}); ramps {steps} while the "
        "guardrails hold"
    )


def gate_table(decision: GateDecisionPublic) -> Table:
    """The gate's evidence per category: candidate and baseline means."""
    table = Table(title=f"gate: {decision.candidate} vs {decision.baseline}")
    table.add_column("category")
    table.add_column(decision.candidate, justify="right")
    table.add_column(decision.baseline, justify="right")
    categories = decision.evidence.get("categories") or {}
    for name, values in sorted(categories.items()):
        if isinstance(values, dict):
            table.add_row(
                name,
                _fmt(values.get("candidate")),
                _fmt(values.get("baseline")),
            )
    overall = decision.evidence.get("overall") or {}
    if isinstance(overall, dict):
        table.add_row("overall", _fmt(overall.get("candidate")), _fmt(overall.get("baseline")))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("mean")
    return f"{value:.3f}" if isinstance(value, int | float) else "-"
