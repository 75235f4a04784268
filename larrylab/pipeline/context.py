"""What every stage of one pipeline run shares: its folder, its model settings, its cache."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from larrylab.pipeline.llm import (
    Completer,
    LLMClient,
    LLMOptions,
    RequestCache,
    client_libraries,
)

T = TypeVar("T")


@dataclass(frozen=True)
class PipelineContext:
    """One pipeline run.

    Attributes:
        out: The run folder; each stage writes `out/<stage>/`, LLM answers go to `out/cache/`.
        llm: Model settings for classification, generation and judging.
        completer: A litellm-compatible `acompletion` function (None: litellm's own).
        progress: Show progress bars (on a terminal).
    """

    out: Path
    llm: LLMOptions
    completer: Completer | None = None
    progress: bool = True

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes."""
        return self.out / stage

    def client(self) -> LLMClient:
        """A fresh LLM client (its own counters) sharing the run's request cache."""
        return LLMClient(self.llm, RequestCache(self.out / "cache"), self.completer)

    def llm_libraries(self) -> tuple[str, ...]:
        """The modules the run's LLM client imports (litellm unless a completer is given).

        Stages import them before starting their clocks (`StageClock(imports=...)`).
        """
        return client_libraries(litellm=self.completer is None)

    def bar(self, items: Iterable[T], *, total: int | None, desc: str) -> Iterable[T]:
        """`items` wrapped in a progress bar when progress is on and stderr is a terminal."""
        return tqdm(
            items, total=total, desc=desc, unit="item", disable=None if self.progress else True
        )

    def manual_bar(self, *, total: int | None, desc: str) -> Any:
        """A progress bar updated by hand (`.update(n)`, `.close()`)."""
        return tqdm(total=total, desc=desc, unit="item", disable=None if self.progress else True)
