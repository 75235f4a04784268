"""Checking that a folder is a Hugging Face model folder `transformers serve` can chat with."""

from __future__ import annotations

import json
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ModelFolderError(ValueError):
    """A folder that cannot be served; the message says what is missing."""


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("chat_template"))


def check_model_folder(folder: Path) -> Path:
    """The folder's absolute path if it holds a config, weights, a tokenizer and a chat
    template; ModelFolderError naming the first thing missing otherwise."""
    path = folder.expanduser().resolve()
    if not path.exists():
        raise ModelFolderError(f"model folder {folder} does not exist")
    if not path.is_dir():
        raise ModelFolderError(f"{folder} is not a folder: pass a Hugging Face model folder")
    if not (path / "config.json").is_file():
        raise ModelFolderError(
            f"{folder} is not a model folder: it has no config.json (save it with save_pretrained)"
        )
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        raise ModelFolderError(f"{folder} has no model weights (*.safetensors or *.bin)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelFolderError(
            f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json)"
        )
    if not _has_chat_template(path):
        raise ModelFolderError(
            f"{folder} has no chat template (chat_template.jinja or tokenizer_config.json): "
            "chat completions need one"
        )
    return path
