"""How long `larrylab pipeline train --tiny` takes on a CPU, LoRA against QLoRA, per target
preset and torch thread count, and how far the validation loss falls in 3 epochs.

Also measures QLoRA with bitsandbytes' AVX512-BF16 repacking left on (what happens without
`_keep_4bit_trainable_on_cpu`): after the first evaluation the base layers run through a kernel
without a backward, and the gradient through them is lost. Usage:

    python bench/train_tiny.py [--out bench/results/train_tiny.json] [--rows 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from larrylab.training import _train as train_module

TOPICS = ("clinic waiting rooms", "school lunches", "bike commuting", "small-shop pricing")
REPLIES = (
    "Before any solution: who has the {t} problem, how often, and what does it cost them?",
    "Let's trend {t} to the absurd. What breaks first when it grows ten times?",
    "What job is someone hiring a fix for {t} to do? Name the progress they want.",
)
CONFIGS = [
    {"qlora": False, "targets": "qv"},
    {"qlora": False, "targets": "all-linear"},
    {"qlora": True, "targets": "qv"},
    {"qlora": True, "targets": "all-linear"},
]


def write_dataset(folder: Path, n: int) -> Path:
    """`n` short coaching conversations as train.jsonl and validation.jsonl (1 in 8)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for split, count in (("train", n - n // 8), ("validation", n // 8)):
        lines = []
        for _ in range(count):
            topic = rng.choice(TOPICS)
            messages = [
                {"role": "system", "content": "You are Larry, a PWS coach."},
                {"role": "user", "content": f"We want to build an app for {topic}."},
                {"role": "assistant", "content": rng.choice(REPLIES).format(t=topic)},
            ]
            lines.append(json.dumps({"messages": messages}) + "\n")
        (folder / f"{split}.jsonl").write_text("".join(lines))
    return folder


def _one(dataset: Path, out: Path, threads: int, qlora: bool, targets: str) -> dict[str, Any]:
    torch.set_num_threads(threads)
    opts = train_module.TrainOptions(
        dataset=dataset, out=out, tiny=True, qlora=qlora, targets=targets, epochs=3, batch_size=8
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_module.train(opts, log=lambda _: None)
    m = result.metrics
    return {
        "threads": threads,
        "qlora": qlora,
        "targets": targets,
        "wall_s": round(time.perf_counter() - t0, 2),
        "train_runtime_s": m["train_runtime_s"],
        "eval_loss_before": round(m["eval_loss_before"], 4),
        "best_eval_loss": round(m["best_eval_loss"], 4),
        "loss_drop": round(m["eval_loss_before"] - m["best_eval_loss"], 4),
        "trainable_params": m["trainable_params"],
        "no_backward_warnings": sum("autograd kernel" in str(w.message) for w in caught),
    }


def main() -> None:
    """Run every configuration and write the results as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_tiny.json"))
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = write_dataset(root / "dataset", args.rows)
        _one(dataset, root / "warmup", 1, False, "qv")  # imports and first-call costs
        for i, cfg in enumerate(CONFIGS):
            for threads in (1, 2):
                rows.append(_one(dataset, root / f"r{i}-{threads}", threads, **cfg))
                print(rows[-1], flush=True)
        with mock.patch.object(train_module, "_keep_4bit_trainable_on_cpu", lambda model: None):
            for targets in ("qv", "all-linear"):
                row = _one(dataset, root / f"repack-{targets}", 1, True, targets)
                rows.append({**row, "avx512_repacking": True})
                print(rows[-1], flush=True)
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "dataset_rows": args.rows,
        "epochs": 3,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
