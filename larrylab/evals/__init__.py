"""The PWS eval suite (inspect-ai), its held-out eval set and the promotion gate.

The eval set API is light and imported eagerly (the data pipeline reads it for
decontamination); everything that needs inspect-ai is imported on first use, so that
`larrylab --help` and the pipeline do not pay for importing inspect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from larrylab.evals.evalset import (
    CATEGORIES,
    EVAL_SET_VERSION,
    EvalItem,
    EvalSetError,
    eval_set_hash,
    load_eval_items,
)

if TYPE_CHECKING:
    from larrylab.evals._scorer import pws_scorer
    from larrylab.evals.gate import GateConfig, decide_gate, run_gate
    from larrylab.evals.runner import EvalRunError, run_evals
    from larrylab.evals.tasks import TASKS, record_to_sample

_LAZY = {
    "pws_scorer": "larrylab.evals._scorer",
    "GateConfig": "larrylab.evals.gate",
    "decide_gate": "larrylab.evals.gate",
    "run_gate": "larrylab.evals.gate",
    "EvalRunError": "larrylab.evals.runner",
    "run_evals": "larrylab.evals.runner",
    "TASKS": "larrylab.evals.tasks",
    "record_to_sample": "larrylab.evals.tasks",
}

__all__ = [
    "CATEGORIES",
    "EVAL_SET_VERSION",
    "TASKS",
    "EvalItem",
    "EvalRunError",
    "EvalSetError",
    "GateConfig",
    "decide_gate",
    "eval_set_hash",
    "load_eval_items",
    "pws_scorer",
    "record_to_sample",
    "run_evals",
    "run_gate",
]


def __getattr__(name: str) -> Any:
    """Import the inspect-backed parts of the API on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'larrylab.evals' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
