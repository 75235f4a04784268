"""`larrylab pipeline package`: the Modelfile, the printed command, and model creation through
the `ollama` client against a loopback server speaking Ollama's blob/create API."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from larrylab.db._engine import make_engine
from larrylab.release._registry import get_model
from larrylab.training._package import (
    LARRY_SYSTEM_PROMPT,
    OLLAMA_BASES,
    PackagingError,
    check_name,
    modelfile_text,
    normalize_host,
    ollama_template,
    plan_package,
)
from tests.pipeline.ollama_fake import FakeOllama
from tests.training.factories import SYSTEM, pipeline_app, write_dataset

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny trained adapter (and merged model), registered as larry-pkg."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pkg")
    dataset = write_dataset(root / "dataset", n=16)
    db = f"sqlite:///{root / 'larrylab.db'}"
    args = ["train", "--dataset", str(dataset), "--out", str(root / "run"), "--tiny"]
    args += ["--epochs", "1", "--merge", "--name", "larry-pkg", "--database-url", db]
    result = CliRunner().invoke(pipeline_app(), args)
    assert result.exit_code == 0, result.output
    return {"root": root, "out": root / "run", "adapter": root / "run" / "adapter", "db": db}


def _package(*args: str) -> Any:
    return CliRunner().invoke(pipeline_app(), ["package", *args])


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_merged_run_is_packaged_from_the_merged_model_by_default(run: dict[str, Any]) -> None:
    result = _package("--adapter", str(run["adapter"]), "--name", "larry-pkg")
    assert result.exit_code == 0, result.output
    modelfile = run["out"] / "Modelfile"
    assert f"ollama create larry-pkg -f {modelfile}" in result.output
    text = modelfile.read_text()
    # what Ollama >= 0.34.1 accepts: FROM the merged weights, no ADAPTER line
    assert f"FROM {(run['out'] / 'merged').resolve()}\n" in text
    assert "ADAPTER" not in text
    assert "note:" not in result.output
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system' in text
    assert f'SYSTEM """{SYSTEM}"""' in text  # the system prompt the adapter was trained with
    assert 'PARAMETER stop "<|im_start|>"\nPARAMETER stop "<|im_end|>"\n' in text


def test_as_adapter_writes_from_the_base_with_adapter_and_warns(run: dict[str, Any]) -> None:
    result = _package("--adapter", str(run["adapter"]), "--name", "larry-pkg", "--as-adapter")
    assert result.exit_code == 0, result.output
    text = (run["out"] / "Modelfile").read_text()
    assert f"FROM {(run['out'] / 'base').resolve()}\n" in text
    assert f"ADAPTER {run['adapter'].resolve()}\n" in text
    assert "Ollama 0.34.1 and later refuse it" in result.output
    assert "package without --as-adapter" in result.output


def _unmerged_copy(run: dict[str, Any], folder: Path) -> Path:
    """The run's adapter in `folder`, with a run.json that names no merged model."""
    adapter = folder / "adapter"
    shutil.copytree(run["adapter"], adapter)
    record = json.loads((run["out"] / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**record, "merged_dir": None}))
    return adapter


def test_an_unmerged_run_gets_adapter_and_is_told_how_to_merge(
    run: dict[str, Any], tmp_path: Path
) -> None:
    adapter = _unmerged_copy(run, tmp_path)
    result = _package("--adapter", str(adapter), "--name", "larry-unmerged")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "Modelfile").read_text()
    assert f"FROM {(run['out'] / 'base').resolve()}\n" in text
    assert f"ADAPTER {adapter.resolve()}\n" in text
    note = " ".join(result.output.split())
    assert "this run has no merged model, so the Modelfile uses ADAPTER" in note
    assert "Ollama 0.34.1 and later refuse" in note
    assert "train again with `larrylab pipeline train --merge`" in note
    insisted = _package("--adapter", str(adapter), "--name", "larry-unmerged", "--merged")
    assert insisted.exit_code == 2
    assert "no merged model in" in insisted.output and "--as-adapter" in insisted.output


def test_client_path_uploads_blobs_creates_the_model_and_updates_the_registry(
    run: dict[str, Any],
) -> None:
    adapter: Path = run["adapter"]
    base: Path = run["out"] / "base"
    with FakeOllama() as fake:
        args = ["--adapter", str(adapter), "--name", "larry-pkg", "--ollama-host", fake.url]
        args += ["--as-adapter"]
        result = _package(*args, "--database-url", run["db"])
        assert result.exit_code == 0, result.output
        (create,) = fake.state.creates
        assert create["model"] == "larry-pkg" and create["stream"] is False
        assert "from" not in create  # the tiny base is a folder: its files are uploaded
        assert create["adapters"] == {
            "adapter_model.safetensors": _digest(adapter / "adapter_model.safetensors"),
            "adapter_config.json": _digest(adapter / "adapter_config.json"),
        }
        assert create["files"]["model.safetensors"] == _digest(base / "model.safetensors")
        assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(create["files"])
        assert create["template"] == ollama_template("chatml")
        assert create["system"] == SYSTEM
        assert create["parameters"]["stop"] == ["<|im_start|>", "<|im_end|>"]
        uploads = [p for m, p, s in fake.state.requests if m == "POST" and s == 201]
        assert len(uploads) == len(create["files"]) + 2
        # a second run finds every blob on the server (HEAD 200) and uploads nothing
        before = len(fake.state.requests)
        assert _package(*args, "--database-url", run["db"]).exit_code == 0
        again = fake.state.requests[before:]
        assert not [r for r in again if r[0] == "POST" and r[1].startswith("/api/blobs/")]
        assert len(fake.state.creates) == 2
    with Session(make_engine(run["db"])) as session:
        entry = get_model(session=session, name="larry-pkg")
    assert entry.api == "openai"
    assert entry.base_url == f"{fake.url}/v1" and entry.model == "larry-pkg"
    assert entry.lineage["serving"]["packaged"] is True
    assert entry.lineage["serving"]["mode"] == "adapter"
    assert entry.lineage["dataset_manifest_hash"]  # training lineage is kept


def test_server_refusing_adapters_points_to_merged(run: dict[str, Any], tmp_path: Path) -> None:
    with FakeOllama(refuse_adapters=True) as fake:
        args = ["--adapter", str(run["adapter"]), "--name", "larry-pkg", "--ollama-host", fake.url]
        refused = _package(*args, "--as-adapter", "--database-url", run["db"])
        assert refused.exit_code == 2
        assert "refuses LoRA adapters" in refused.output
        assert "package without --as-adapter" in refused.output
        unmerged = _unmerged_copy(run, tmp_path)
        args_unmerged = ["--adapter", str(unmerged), "--name", "x2", "--ollama-host", fake.url]
        refused = _package(*args_unmerged, "--database-url", run["db"])
        assert refused.exit_code == 2
        assert "train again with --merge" in refused.output
        merged = _package(*args, "--database-url", run["db"])  # the default: merged
        assert merged.exit_code == 0, merged.output
        create = fake.state.creates[-1]
    assert "adapters" not in create
    merged_dir = run["out"] / "merged"
    assert create["files"]["model.safetensors"] == _digest(merged_dir / "model.safetensors")
    with Session(make_engine(run["db"])) as session:
        assert get_model(session=session, name="larry-pkg").lineage["serving"]["mode"] == "merged"


def test_a_hub_base_is_created_from_its_ollama_name(run: dict[str, Any], tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(run["adapter"], adapter)
    llama = Path(pytest.importorskip("trl").__file__).parent / "chat_templates" / "llama3_2.jinja"
    (adapter / "chat_template.jinja").write_text(llama.read_text())
    record = {"base_model": "meta-llama/Llama-3.2-3B-Instruct", "chat_family": "llama3"}
    (tmp_path / "run.json").write_text(json.dumps(record))
    plan = plan_package(adapter, "larry-llama")
    assert plan.base == OLLAMA_BASES["meta-llama/Llama-3.2-3B-Instruct"]
    assert plan.system == LARRY_SYSTEM_PROMPT
    assert "Cutting Knowledge Date: December 2023" in plan.template
    text = modelfile_text(plan)
    assert "FROM llama3.2:3b-instruct-fp16\n" in text
    assert 'PARAMETER stop "<|eot_id|>"' in text
    with FakeOllama() as fake:
        result = _package(
            "--adapter", str(adapter), "--name", "larry-llama", "--ollama-host", fake.url,
            "--database-url", run["db"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        (create,) = fake.state.creates
    assert create["from"] == "llama3.2:3b-instruct-fp16" and "files" not in create
    assert set(create["adapters"]) == {"adapter_model.safetensors", "adapter_config.json"}
    assert "no registry entry 'larry-llama'" in result.output


def test_mistral_plan_uses_the_mistral_format(run: dict[str, Any], tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(run["adapter"], adapter)
    (adapter / "chat_template.jinja").write_text("{{ '[INST] ' + m + '[/INST]' }}")
    (tmp_path / "run.json").write_text(json.dumps({"base_model": str(run["out"] / "base")}))
    plan = plan_package(adapter, "larry-mistral", base="mistral:7b-instruct-v0.3-fp16")
    assert plan.family == "mistral" and plan.base == "mistral:7b-instruct-v0.3-fp16"
    assert not plan.base_is_dir
    assert plan.parameters["stop"] == ["[INST]", "[/INST]", "</s>"]
    assert "[INST] {{ if and $.System" in plan.template and "{{ .Content }}[/INST]" in plan.template


def test_unreachable_host_fails_with_a_sentence(run: dict[str, Any]) -> None:
    from larrylab.localproc import free_port

    host = f"http://127.0.0.1:{free_port()}"
    result = _package("--adapter", str(run["adapter"]), "--name", "x1", "--ollama-host", host)
    assert result.exit_code == 2
    assert f"cannot reach Ollama at {host}" in result.output


@pytest.mark.parametrize("name", ["", "-bad", "has space", "ünïcode"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(PackagingError, match="not a valid Ollama model name"):
        check_name(name)


def test_missing_adapter_is_refused(tmp_path: Path) -> None:
    result = _package("--adapter", str(tmp_path), "--name", "larry")
    assert result.exit_code == 2
    assert "has no adapter_model.safetensors" in result.output


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("localhost", "http://localhost:11434"),
        ("http://10.0.0.5:8080/", "http://10.0.0.5:8080"),
        ("https://ollama.example.com", "https://ollama.example.com:11434"),
    ],
)
def test_hosts_are_normalised_like_ollama(host: str, url: str) -> None:
    assert normalize_host(host) == url
