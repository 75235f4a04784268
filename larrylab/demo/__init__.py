"""`larrylab demo`: the product working offline on this machine, end to end.

Two SIMULATED upstreams (one shaped like Gemini, slower; one like an Ollama fine-tune, faster),
the router on SQLite, and simulated workshop learners sending streaming multi-turn threads across
the seven PWS categories and leaving 1-5 star ratings. Ends with the per-arm report.
"""

from __future__ import annotations

import signal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlmodel import Session

from larrylab.demo.learners import LearnerTaste
from larrylab.demo.traffic import send_workshop_traffic
from larrylab.localproc import LocalProcess, start_router, start_sim
from larrylab.platform.db import make_engine
from larrylab.platform.experiments import get_experiment
from larrylab.platform.summary import summarize
from larrylab.tables import summary_table

EXPERIMENT = "larry-v1-vs-gemini"
ROUTE = "larry"

GEMINI_LIKE = ["--latency-ms", "80", "--ttft-ms", "450", "--tokens-per-s", "120", "--seed", "11"]
OLLAMA_LIKE = ["--latency-ms", "5", "--ttft-ms", "60", "--tokens-per-s", "300", "--seed", "12"]


def demo_config(gemini_url: str, ollama_url: str) -> str:
    """The YAML config the demo's router bootstraps from."""
    return (
        "# Written by `larrylab demo`: both upstreams are SIMULATED (larrylab sim).\n"
        "models:\n"
        f"  gemini-flash: {{api: openai, base_url: {gemini_url}/v1, model: gemini-2.5-flash}}\n"
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
    router = start_router(log_dir=logs, database_url=db_url, config=config)
    console.print(f"  router on {router.url}/v1 (SQLite at {directory / 'larrylab.db'})")
    return [gemini, ollama], router, db_url


def run_demo(
    directory: Path, *, threads: int = 40, console: Console | None = None, seed: int = 7
) -> None:
    """Run the offline demo in `directory` (its database is started afresh)."""
    console = console or Console()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("larrylab.db*"):
        stale.unlink()
    console.rule("larrylab demo — offline, on simulated upstreams")
    console.print("[1/3] starting two simulated upstreams and the router")
    sims, router, db_url = _start_all(directory, console)
    try:
        console.print(
            f"[2/3] {threads} simulated workshop threads, streaming, with 1-5 star ratings"
        )
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
    finally:
        router.stop(signal.SIGTERM)
        for sim in sims:
            sim.stop()
    console.print("[3/3] report")
    engine = make_engine(db_url)
    with Session(engine) as session:
        exp = get_experiment(session=session, name=EXPERIMENT)
    rows = summarize(engine, EXPERIMENT, [(a.model, a.control, a.weight) for a in exp.arms])
    console.print(summary_table(rows, title=f"{EXPERIMENT} (simulated traffic)"))
    by_arm = {r.arm: r for r in rows}
    fast, slow = by_arm["larry-v1"].latency_ms.p50, by_arm["gemini-flash"].latency_ms.p50
    if fast and slow:
        console.print(
            f"  larry-v1 p50 latency is {slow / fast:.1f}x lower than gemini-flash's (simulated)."
        )
    console.print(
        f"\nInspect it again with:\n  larrylab experiment show {EXPERIMENT} --database-url {db_url}"
    )
