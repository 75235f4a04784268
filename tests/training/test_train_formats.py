"""The `--base DIR` path with the real Llama 3.2 and Mistral chat formats.

No hub is reachable here, so each test makes a tiny Llama whose tokenizer carries the real
special tokens and the official chat template; training then goes through the same code a
real base takes: local folder, template marking, system-role folding, packaging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.training.factories import (
    MISTRAL_V01,
    SYSTEM,
    conversations,
    pipeline_app,
    write_dataset,
)

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

LLAMA_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
)


def _texts() -> list[str]:
    return [m["content"] for row in conversations(16) for m in row["messages"]]


def _base(folder: Path, **tokenizer_args: object) -> Path:
    from larrylab.training._tiny import build_tiny_base, train_tokenizer

    tokenizer = train_tokenizer(_texts(), vocab_size=400, **tokenizer_args)  # type: ignore[arg-type]
    return build_tiny_base(_texts(), folder, seed=0, tokenizer=tokenizer)


def test_llama32_format_trains_from_a_local_base(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    template = (Path(trl.__file__).parent / "chat_templates" / "llama3_2.jinja").read_text()
    base = _base(
        tmp_path / "llama-base",
        special_tokens=LLAMA_SPECIALS,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        chat_template=template,
    )
    dataset = write_dataset(tmp_path / "d", n=16)
    out = tmp_path / "run"
    args = ["train", "--dataset", str(dataset), "--out", str(out), "--base", str(base)]
    result = CliRunner().invoke(pipeline_app(), [*args, "--epochs", "1", "--no-register"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["base_model"] == str(base) and run["chat_family"] == "llama3"
    assert run["tiny"] is False

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    assert "{% generation %}" in tokenizer.chat_template
    reply = "Who has the problem?"
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
    assert tokenizer.decode(masked) == reply + "<|eot_id|>"

    from larrylab.training._package import plan_package

    plan = plan_package(out / "adapter", "larry-llama")
    assert plan.base == str(base) and plan.base_is_dir
    assert plan.family == "llama3" and "Cutting Knowledge Date" in plan.template


def test_mistral_v01_format_folds_the_system_prompt(tmp_path: Path) -> None:
    from larrylab.training._train import TrainOptions, train

    torch.set_num_threads(1)
    base = _base(
        tmp_path / "mistral-base",
        special_tokens=("<unk>", "<s>", "</s>"),
        bos="<s>",
        eos="</s>",
        pad="<unk>",
        chat_template=MISTRAL_V01,
    )
    dataset = write_dataset(tmp_path / "d", n=16, fmt="jsonl")
    result = train(
        TrainOptions(dataset=dataset, out=tmp_path / "run", base=str(base), epochs=1),
        log=lambda _: None,
    )
    assert result.run["chat_family"] == "mistral"
    assert result.run["system_prompt"] == SYSTEM
    assert result.metrics["epochs_run"] == 1
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
