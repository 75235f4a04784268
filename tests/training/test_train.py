"""`larrylab pipeline train`: a tiny Llama trains offline, the adapter reloads, merges and
generates, QLoRA runs on the CPU, the run is registered with its lineage, bad input fails
with a sentence."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

import larrylab
from larrylab.db._engine import make_engine
from larrylab.release._registry import get_model, list_model_events
from tests.training.factories import SYSTEM, pipeline_app, write_dataset

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run through the CLI, with --merge, registered in a SQLite store."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    dataset = write_dataset(root / "dataset")
    db = f"sqlite:///{root / 'larrylab.db'}"
    out = root / "run"
    args = ["train", "--dataset", str(dataset), "--out", str(out), "--tiny", "--epochs", "3"]
    args += ["--batch-size", "8", "--merge", "--name", "larry-tiny", "--database-url", db]
    result = CliRunner().invoke(pipeline_app(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    return {"root": root, "dataset": dataset, "db": db, "out": out, "report": report}


def test_tiny_run_writes_adapter_metrics_and_lineage(trained: dict[str, Any]) -> None:
    out: Path = trained["out"]
    adapter = out / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert (adapter / name).is_file(), name
    assert "{% generation %}" in (adapter / "chat_template.jinja").read_text()
    assert not (adapter / "training_args.bin").exists()
    assert not (out / "checkpoints").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    assert len(metrics["eval_loss_per_epoch"]) == 3
    # the loss falls: on validation against the untrained adapter, and on training per epoch
    assert metrics["best_eval_loss"] < metrics["eval_loss_before"] - 0.05
    assert metrics["train_loss_per_epoch"][-1] < metrics["train_loss_per_epoch"][0]
    run = json.loads((out / "run.json").read_text())
    assert run["base_model"] == str((out / "base").resolve())
    assert run["chat_family"] == "chatml"
    assert run["system_prompt"] == SYSTEM
    assert run["registered_name"] == "larry-tiny"
    assert run["settings"]["targets"] == "qv" and run["settings"]["qlora"] is False


def test_adapter_reloads_merges_and_generates(trained: dict[str, Any]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out: Path = trained["out"]
    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "An app for pets."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    base = AutoModelForCausalLM.from_pretrained(out / "base")
    with torch.no_grad():
        base_logits = base(**prompt).logits
    tuned = PeftModel.from_pretrained(base, out / "adapter")
    assert tuned.peft_config["default"].target_modules == {"q_proj", "v_proj"}
    assert tuned.peft_config["default"].r == 16 and tuned.peft_config["default"].lora_alpha == 32
    with torch.no_grad():
        tuned_logits = tuned(**prompt).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)  # the adapter does something
    generated = tuned.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    with torch.no_grad():
        merged_logits = merged(**prompt).logits
    assert torch.allclose(merged_logits, tuned_logits, atol=1e-4)
    assert merged.generate(**prompt, max_new_tokens=8, do_sample=False).tolist() == (
        generated.tolist()
    )


def test_loss_is_on_assistant_tokens_only(trained: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained["out"] / "adapter")
    reply = "Who has the problem, and how often?"
    encoded = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "An app for clinics."},
            {"role": "assistant", "content": reply},
        ],
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    masked = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == reply + "<|im_end|>"


def test_run_is_registered_with_lineage(trained: dict[str, Any]) -> None:
    dataset: Path = trained["dataset"]
    with Session(make_engine(trained["db"])) as session:
        entry = get_model(session=session, name="larry-tiny")
        events = list_model_events(session=session, name="larry-tiny")
    assert entry.state == "registered"
    lineage = entry.lineage
    manifest_hash = hashlib.sha256((dataset / "manifest.json").read_bytes()).hexdigest()
    assert lineage["dataset_manifest_hash"] == manifest_hash
    assert lineage["dataset"]["dataset_fingerprint"] == "abc123"
    assert lineage["base_model"] == str((trained["out"] / "base").resolve())
    assert lineage["adapter_path"] == str((trained["out"] / "adapter").resolve())
    assert lineage["training_metrics"]["best_eval_loss"] > 0
    assert lineage["code_version"]["larrylab"] == larrylab.__version__
    assert lineage["serving"]["packaged"] is False
    assert [e.to_state for e in events] == ["registered"]
    assert "larrylab pipeline train" in events[0].actor


def test_after_merge_the_next_step_packages_the_merged_model(trained: dict[str, Any]) -> None:
    adapter = trained["out"] / "adapter"
    hint = trained["report"]["next"]
    assert hint.startswith(f"larrylab pipeline package --adapter {adapter} --name larry-tiny  (")
    assert "FROM the merged model, no ADAPTER" in hint and "--as-adapter" not in hint


def test_without_merge_the_next_step_says_ollama_refuses_the_adapter(
    trained: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from larrylab.cli._training import _report_training
    from larrylab.training._train import TrainResult

    out: Path = trained["out"]
    run = json.loads((out / "run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    _report_training(TrainResult(out, out / "adapter", None, metrics, run), None, "larry-x", False)
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("next:")]
    assert f"larrylab pipeline package --adapter {out / 'adapter'} --name larry-x" in line
    assert "Ollama >= 0.34.1 refuses it" in line and "train with --merge" in line


def test_a_taken_name_fails_before_training(trained: dict[str, Any], tmp_path: Path) -> None:
    args = ["train", "--dataset", str(trained["dataset"]), "--out", str(tmp_path / "again")]
    args += ["--tiny", "--name", "larry-tiny", "--database-url", trained["db"]]
    result = CliRunner().invoke(pipeline_app(), args)
    assert result.exit_code == 2
    assert "already registered" in result.output
    assert not (tmp_path / "again").exists()


def test_qlora_runs_on_cpu(tmp_path: Path) -> None:
    from larrylab.training._train import TrainOptions, train

    dataset = write_dataset(tmp_path / "dataset", fmt="jsonl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(
            TrainOptions(
                dataset=dataset,
                out=tmp_path / "run",
                tiny=True,
                qlora=True,
                epochs=3,
                batch_size=8,
                targets="all-linear",
            ),
            log=lambda _: None,
        )
    # evaluation must not leave the 4-bit weights in bitsandbytes' CPU inference layout, whose
    # kernel has no backward (the gradient through the base layers would silently vanish)
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    assert result.metrics["quantized_4bit_layers"] > 0  # the base really was 4-bit NF4
    assert result.metrics["best_eval_loss"] < result.metrics["eval_loss_before"]
    assert result.run["settings"]["qlora"] is True
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    targeted = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert targeted >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_jsonl_dataset_without_validation_is_split(tmp_path: Path) -> None:
    from larrylab.training._train import load_conversations

    folder = write_dataset(tmp_path / "d", n=20, fmt="jsonl")
    (folder / "validation.jsonl").unlink()
    splits = load_conversations(folder, seed=1)
    assert len(splits["train"]) + len(splits["validation"]) == 18
    assert len(splits["validation"]) >= 1
    assert splits["train"].column_names == ["messages"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (None, "does not exist"),
        ([{"text": "hi"}], "has no `messages`"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "no assistant reply"),
        ([{"messages": [{"role": "robot", "content": "hi"}]}], "role of system, user"),
    ],
)
def test_bad_datasets_fail_with_a_sentence(
    tmp_path: Path, rows: list[dict[str, Any]] | None, message: str
) -> None:
    folder = tmp_path / "d"
    if rows is not None:
        folder.mkdir()
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "--dataset", str(folder), "--out", str(tmp_path / "o"), "--tiny"]
    result = CliRunner().invoke(pipeline_app(), [*args, "--no-register"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_offline_hub_base_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    dataset = write_dataset(tmp_path / "d", n=10, fmt="jsonl")
    args = ["train", "--dataset", str(dataset), "--out", str(tmp_path / "o"), "--no-register"]
    result = CliRunner().invoke(
        pipeline_app(), [*args, "--base", "meta-llama/Llama-3.2-3B-Instruct"]
    )
    assert result.exit_code == 2, result.output
    assert "'meta-llama/Llama-3.2-3B-Instruct' is not in the Hugging Face cache" in result.output
    assert "HF_HUB_OFFLINE" in result.output


def test_local_base_without_config_is_refused(tmp_path: Path) -> None:
    from larrylab.training._train import TrainingError, resolve_base

    with pytest.raises(TrainingError, match=r"has no config\.json"):
        resolve_base(str(tmp_path))


def test_missing_train_extra_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from larrylab.training import _train as train_module

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a)
    )
    with pytest.raises(train_module.TrainingError, match=r"pip install 'larrylab\[train\]'"):
        train_module.require_train_extra()


def test_importing_the_commands_does_not_import_torch() -> None:
    code = (
        "import sys, larrylab.cli._training, larrylab.training._package; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registration_works_on_sqlite_and_postgres(
    trained: dict[str, Any], migrated_url: str, tmp_path: Path
) -> None:
    from larrylab.cli._training import _register
    from larrylab.training._train import TrainResult

    run = json.loads((trained["out"] / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps(run))
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    result = TrainResult(tmp_path, trained["out"] / "adapter", None, metrics, run)
    entry = _register(migrated_url, "larry-copy", result)
    assert entry["state"] == "registered"
    with Session(make_engine(migrated_url)) as session:
        stored = get_model(session=session, name="larry-copy")
    assert stored.lineage["training_metrics"] == metrics
    assert stored.base_url == "http://127.0.0.1:11434/v1" and stored.model == "larry-copy"
    assert json.loads((tmp_path / "run.json").read_text())["registered_name"] == "larry-copy"
