"""`larrylab demo`: the product working offline on this machine, end to end.

Two SIMULATED upstreams (one shaped like Gemini, slower; one like an Ollama fine-tune, faster),
the router on SQLite, and simulated workshop learners sending streaming multi-turn threads across
the seven PWS categories and leaving 1-5 star ratings. Then the flywheel: the pipeline turns the
highly rated threads into a dataset, a tiny LoRA adapter is trained and registered, the eval suite
and the gate judge it against the current model, and a passing candidate starts a canary.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine
from sqlmodel import Session

from larrylab.cli import render_arms
from larrylab.db import make_engine
from larrylab.demo.flywheel import (
    FlywheelOptions,
    FlywheelResult,
    gate_and_promote,
    run_pipeline_stages,
    train_and_register,
)
from larrylab.demo.learners import LearnerTaste
from larrylab.demo.traffic import send_workshop_traffic
from larrylab.experiments import arm_reports, experiment_report, get_experiment
from larrylab.localproc import LocalProcess, start_router, start_sim

EXPERIMENT = "larry-v1-vs-gemini"
ROUTE = "larry"

# The Gemini-like upstream also plays the pipeline's generator and judge: it answers structured
# output near the top of numeric ranges (an LLM judge that mostly approves).
GEMINI_LIKE = [
    "--latency-ms",
    "80",
    "--ttft-ms",
    "450",
    "--tokens-per-s",
    "120",
    "--seed",
    "11",
    "--structured-bias",
    "0.85",
]
OLLAMA_LIKE = ["--latency-ms", "5", "--ttft-ms", "60", "--tokens-per-s", "300", "--seed", "12"]


def demo_config(gemini_url: str, ollama_url: str) -> str:
    """The YAML config the demo's router bootstraps from."""
    return (
        "# Written by `larrylab demo`: both upstreams are SIMULATED (larrylab sim).\n"
        "models:\n"
        f"  gemini-flash: {{api: gemini, base_url: {gemini_url}, model: gemini-2.5-flash}}\n"
        f"  larry-v1: {{api: openai, base_url: {ollama_url}/v1, model: larry-v1}}\n"
        "routes:\n"
        f"  {ROUTE}: {{model: gemini-flash}}\n"
        "experiments:\n"
        f"  - {{name: {EXPERIMENT}, route: {ROUTE}, arms: ["
        "{model: gemini-flash, weight: 70, control: true}, {model: larry-v1, weight: 30}]}\n"
    )


def _start_all(directory: Path, console: Console) -> tuple[list[LocalProcess], LocalProcess, str]:
    logs = directory / "logs"
    gemini = start_sim(log_dir=logs, label="gemini-like", extra=GEMINI_LIKE)
    console.print(f"  SIMULATED Gemini-like upstream (slower) on {gemini.url}")
    ollama = start_sim(log_dir=logs, label="ollama-finetune-like", extra=OLLAMA_LIKE)
    console.print(f"  SIMULATED Ollama fine-tune-like upstream (faster) on {ollama.url}")
    config = directory / "larrylab.yaml"
    config.write_text(demo_config(gemini.url, ollama.url))
    db_url = f"sqlite:///{(directory / 'larrylab.db').resolve()}"
    # The router's journal and spill files stay in the demo's folder too.
    env = {
        "LARRYLAB_JOURNAL_DIR": str((directory / "journal").resolve()),
        "LARRYLAB_SPILL_DIR": str((directory / "spill").resolve()),
    }
    router = start_router(log_dir=logs, database_url=db_url, config=config, env=env)
    console.print(
        f"  router on {router.url} for Gemini's API and {router.url}/v1 for OpenAI's "
        f"(SQLite at {directory / 'larrylab.db'})"
    )
    return [gemini, ollama], router, db_url


def _traffic(router: LocalProcess, threads: int, seed: int, console: Console) -> None:
    taste = LearnerTaste(weights={})
    with Progress(
        TextColumn("  threads"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("threads", total=threads)
        result = send_workshop_traffic(
            router.url,
            route=ROUTE,
            threads=threads,
            seed=seed,
            taste=taste,
            on_thread_done=lambda: progress.advance(task),
        )
    console.print(
        f"  sent {result.requests} requests, {result.ratings} ratings, {result.errors} errors"
    )


def _ab_report(engine: Engine, console: Console) -> str:
    """Print the A/B test's report (per-arm rows, verdict); returns the candidate's verdict."""
    with Session(engine) as session:
        exp = get_experiment(session=session, name=EXPERIMENT)
    arms = [(a.model, a.control, a.weight) for a in exp.arms]
    report = experiment_report(engine, EXPERIMENT, arms)
    rows = report.arms
    console.print(render_arms(rows, title=f"{EXPERIMENT} (simulated traffic)"))
    by_arm = {r.arm: r for r in rows}
    fast, slow = by_arm["larry-v1"].latency_ms.p50, by_arm["gemini-flash"].latency_ms.p50
    if fast and slow:
        console.print(
            f"  larry-v1 p50 latency is {slow / fast:.1f}x lower than gemini-flash's (simulated)."
        )
    cand = report.candidates[0]
    why = "; ".join(cand.reasons)
    console.print(f"  verdict for larry-v1: [bold]{cand.verdict}[/bold] ({why})")
    return cand.verdict


def run_demo(
    directory: Path,
    *,
    threads: int = 40,
    console: Console | None = None,
    seed: int = 7,
    flywheel: FlywheelOptions | None = None,
) -> FlywheelResult:
    """Run the offline demo in `directory` (its database and pipeline are started afresh)."""
    console = console or Console()
    flywheel = flywheel or FlywheelOptions()
    if flywheel.model == "smollm2":
        from larrylab.demo.smollm2 import check_smollm2_ready

        check_smollm2_ready()
    elif flywheel.model != "tiny":
        raise ValueError(f"unknown demo model {flywheel.model!r}: choose tiny or smollm2")
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("larrylab.db*"):
        stale.unlink()
    for folder in ("pipeline", "train", "train-data", "eval-logs"):
        shutil.rmtree(directory / folder, ignore_errors=True)
    if flywheel.model == "smollm2":
        console.rule("larrylab demo — offline, with SmolLM2-135M served on this machine")
    else:
        console.rule("larrylab demo — offline, on simulated upstreams")
    console.print("[1/6] starting two simulated upstreams and the router")
    sims, router, db_url = _start_all(directory, console)
    engine = make_engine(db_url)
    servers: list[Any] = []  # model servers the smollm2 mode starts
    try:
        console.print(
            f"[2/6] {threads} simulated workshop threads through google-genai, streaming, "
            "rated with thumbs and 1-5 stars"
        )
        _traffic(router, threads, seed, console)
        _ab_report(engine, console)
        console.print(
            "[3/6] pipeline: export >=4-star threads, generate variations, filter, dataset "
            "(generator and judge: the SIMULATED Gemini-like upstream)"
        )
        result = run_pipeline_stages(directory, engine, sims[0].url, console, flywheel)
        if flywheel.model == "smollm2":
            from larrylab.demo.smollm2 import interruptible

            with interruptible():  # Ctrl-C must reach the cleanup below, even mid-eval
                _smollm2_steps(
                    directory, db_url, engine, router, result, console, flywheel, servers
                )
        else:
            console.print(
                "[4/6] fine-tune: a tiny LoRA adapter on CPU, registered with its lineage"
            )
            train_and_register(directory, engine, sims[1].url, result, console, flywheel)
            console.print("[5/6] evals: the inspect-ai PWS suite and the promotion gate")
            gate_and_promote(
                directory,
                db_url,
                engine,
                route=ROUTE,
                experiment=EXPERIMENT,
                result=result,
                console=console,
                opts=flywheel,
            )
        if result.rollout is not None:
            console.print("[6/6] the canary serves live traffic")
            router_sees_canary(router.url, result.rollout.experiment)
            _traffic(router, max(4, threads // 4), seed + 1, console)
        else:
            console.print("[6/6] no canary: the gate refused the candidate (see above)")
    finally:
        for server in servers:
            server.stop()
        router.stop(signal.SIGTERM)
        for sim in sims:
            sim.stop()
    result.timings["total_s"] = time.perf_counter() - started
    if result.check_rates:
        from larrylab.demo.smollm2 import write_results

        console.print(f"  results: {write_results(directory, result)}")
    _final_report(engine, db_url, result, console)
    engine.dispose()
    return result


def _smollm2_steps(
    directory: Path,
    db_url: str,
    engine: Engine,
    router: LocalProcess,
    result: FlywheelResult,
    console: Console,
    flywheel: FlywheelOptions,
    servers: list[Any],
) -> None:
    """Steps 4 and 5 with SmolLM2: bounded fine-tune, both models served and evaluated."""
    from larrylab.demo import smollm2

    assert result.dataset_dir is not None
    console.print(
        "[4/6] fine-tune: SmolLM2-135M-Instruct, a bounded LoRA run on CPU, merged; the base "
        "and the fine-tune served by `transformers serve` behind the router"
    )
    result.train_metrics = smollm2.fine_tune_and_serve(
        directory, engine, router.url, result.dataset_dir, console, servers, result.timings
    )
    console.print(
        f"[5/6] evals: the inspect-ai PWS suite on the REAL replies of both models (at most "
        f"{flywheel.max_tokens} tokens each; the judge is the SIMULATED Gemini-like upstream), "
        "and the promotion gate"
    )
    started = time.perf_counter()
    with smollm2.working(console, f"evaluating {smollm2.TUNED_MODEL} and the route's model"):
        gate_and_promote(
            directory,
            db_url,
            engine,
            route=ROUTE,
            experiment=EXPERIMENT,
            result=result,
            console=console,
            opts=flywheel,
            candidate=smollm2.TUNED_MODEL,
        )
    result.timings["gate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    result.check_rates = smollm2.compare_with_base(
        db_url,
        directory,
        route=ROUTE,
        limit=flywheel.eval_limit,
        max_tokens=flywheel.max_tokens,
        console=console,
    )
    result.timings["base_evals_s"] = time.perf_counter() - started


def _final_report(engine: Engine, db_url: str, result: FlywheelResult, console: Console) -> None:
    console.rule("summary")
    export = result.stages.get("export", {})
    kept = result.stages.get("filter", {})
    split = result.stages.get("dataset", {})
    console.print(
        f"  pipeline: {export.get('threads_exported', 0)} threads exported, "
        f"{result.stages.get('generate', {}).get('variations', 0)} variations generated, "
        f"{kept.get('kept', 0)} kept after rules, dedup, decontamination and the judge; "
        f"dataset {split.get('train', 0)} train / {split.get('validation', 0)} validation"
    )
    m = result.train_metrics
    if m:
        label = "SmolLM2 LoRA" if result.check_rates else "tiny adapter"
        console.print(
            f"  {label}: validation loss {m['eval_loss_before']:.3f} -> "
            f"{m['best_eval_loss']:.3f} in {m['epochs_run']} epochs"
        )
    if result.gate is not None:
        verdict = "[green]passed[/green]" if result.gate.passed else "[red]refused[/red]"
        console.print(f"  gate: {verdict}; " + "; ".join(result.gate.reasons))
        if result.check_rates:
            console.print(
                "  (the replies are SmolLM2's own; the judge's grades come from the SIMULATED "
                "Gemini-like upstream, so only the deterministic checks measure the replies)"
            )
        else:
            console.print(
                "  (against simulated upstreams the judge's grades and the coach replies are "
                "canned corpus text: the gate's numbers show the machinery, not model quality)"
            )
    if result.rollout is not None:
        rollout = result.rollout
        arms = [
            (rollout.baseline, True, 100 - rollout.weight),
            (rollout.candidate, False, rollout.weight),
        ]
        rows = arm_reports(engine, rollout.experiment, arms)
        console.print(render_arms(rows, title=f"{rollout.experiment} (canary)"))
    if result.check_rates:
        from larrylab.demo.smollm2 import BASE_MODEL, TUNED_MODEL, check_rate_table

        console.print(check_rate_table(result.check_rates, BASE_MODEL, TUNED_MODEL))
        timings = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in result.timings.items())
        console.print(f"  timings: {timings}")
    console.print(
        "\nOpen the dashboard on the demo's database:\n"
        f"  larrylab dashboard --database-url {db_url}"
    )


def router_sees_canary(router_url: str, experiment: str, timeout_s: float = 10.0) -> None:
    """Wait until the router's routing table (refreshed every few seconds) runs `experiment`."""
    import httpx

    deadline = time.monotonic() + timeout_s
    body = {"model": ROUTE, "messages": [{"role": "user", "content": "ping"}]}
    while time.monotonic() < deadline:
        r = httpx.post(f"{router_url}/v1/chat/completions", json=body, timeout=30)
        if r.headers.get("x-larrylab-experiment") == experiment:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the router did not pick up {experiment} within {timeout_s:g} s")
