"""Which folders `start_model_server` and `larrylab serve-model` accept, and the errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from larrylab.serving import (
    ModelFolderError,
    ServeModelError,
    check_model_folder,
    start_model_server,
)


def _copy_without(model: Path, dest: Path, *names: str) -> Path:
    shutil.copytree(model, dest)
    for name in names:
        (dest / name).unlink()
    return dest


def test_a_saved_model_folder_is_accepted(tiny_model: Path) -> None:
    assert check_model_folder(tiny_model) == tiny_model.resolve()


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        (("config.json",), "no config.json"),
        (("model.safetensors",), "no model weights"),
        (("tokenizer.json", "tokenizer_config.json"), "no tokenizer"),
        (("chat_template.jinja",), "no chat template"),
    ],
)
def test_an_incomplete_folder_is_refused_with_what_is_missing(
    tiny_model: Path, tmp_path: Path, removed: tuple[str, ...], message: str
) -> None:
    folder = _copy_without(tiny_model, tmp_path / "model", *removed)
    with pytest.raises(ModelFolderError, match=message):
        check_model_folder(folder)


def test_a_taken_port_is_refused_before_anything_starts(tiny_model: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServeModelError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_model_server(tiny_model, port)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "larrylab", "serve-model", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_refuses_a_missing_folder_in_one_sentence(tmp_path: Path) -> None:
    done = _cli(str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: model folder {tmp_path / 'nowhere'} does not exist"


def test_cli_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    done = _cli(str(tmp_path))
    assert done.returncode == 2
    assert "has no config.json" in done.stderr and "Traceback" not in done.stderr


def test_cli_refuses_a_taken_port(tiny_model: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = _cli(str(tiny_model), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: port {port} on 127.0.0.1 is already in use"


def test_a_server_that_exits_while_loading_is_reported(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy_without(tiny_model, tmp_path / "model")
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ServeModelError, match="transformers serve exited with code"):
        start_model_server(folder, log_path=tmp_path / "serve.log", timeout=120)
