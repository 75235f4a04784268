"""Fixtures for serving: a tiny random Llama model folder and `transformers serve` on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from larrylab.serving import ModelServer, start_model_server
from larrylab.training._tiny import build_tiny_base

TEXTS = [
    "Who has this problem, and when did it last happen to them?",
    "What evidence do you have that the problem is real?",
    "Push the trend to the extreme: what breaks first?",
] * 10


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a ChatML chat template, saved with save_pretrained."""
    return build_tiny_base(TEXTS, tmp_path_factory.mktemp("tiny") / "model", seed=7)


@pytest.fixture(scope="session")
def model_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """`transformers serve` pinned to the tiny model, on a free loopback port."""
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    server = start_model_server(tiny_model, log_path=log, timeout=180)
    yield server
    server.stop()
