"""How long the PWS suite takes: one full `run_evals` (112 samples, 7 tasks) against simulated
upstreams, with an instant upstream (inspect and scoring overhead) and with the simulator's
default latency (TTFT 150 ms, 80 tokens/s, about what a hosted model does). Each sample is one
call to the model under test and one to the judge. Usage:

    python bench/evals_suite.py [--out bench/results/evals_suite.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session

from larrylab.config import ModelSpec
from larrylab.db._engine import make_engine, upgrade
from larrylab.evals.evalset import load_eval_items
from larrylab.evals.runner import run_evals
from larrylab.experiments._experiments import set_route
from larrylab.localproc import start_sim
from larrylab.release._registry import create_model

PROFILES: dict[str, list[str]] = {
    "instant": ["--ttft-ms", "1", "--tokens-per-s", "0", "--latency-sigma", "0"],
    "hosted-like": [],  # the simulator's defaults
}


def _store(root: Path, sim_url: str) -> str:
    url = f"sqlite:///{root / 'bench.db'}"
    upgrade(url)
    with Session(make_engine(url)) as session:
        for name in ("control", "candidate"):
            spec = ModelSpec(base_url=f"{sim_url}/v1", model=name)
            create_model(session=session, name=name, spec=spec)
        set_route(session=session, name="larry", model="control")
    return url


def measure(profile: str, root: Path) -> dict[str, Any]:
    """One full suite run of `candidate` judged by `control` on a simulator profile."""
    extra = [*PROFILES[profile], "--seed", "7"]
    sim = start_sim(log_dir=root, label=f"bench-{profile}", extra=extra)
    try:
        url = _store(root, sim.url)
        started = time.perf_counter()
        cpu = time.process_time()
        results = run_evals(database_url=url, model="candidate", log_dir=root / "logs")
        wall = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
    finally:
        sim.stop()
    n = sum(r.n_samples for r in results)
    return {
        "profile": profile,
        "samples": n,
        "wall_s": round(wall, 2),
        "samples_per_s": round(n / wall, 2),
        "client_cpu_s": round(cpu_s, 2),
        "means": {r.task: round(r.mean, 3) for r in results},
    }


def main() -> None:
    """Run every profile and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/evals_suite.json"))
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    rows = []
    for profile in PROFILES:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(profile, Path(tmp)))
            print(json.dumps(rows[-1]))
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "eval_set_items": len(load_eval_items()),
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
