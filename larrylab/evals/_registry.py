"""inspect-ai entry point (`[project.entry-points.inspect_ai] larrylab = ...`).

Importing this module registers the seven PWS tasks (`larrylab/<category>`) and the
`larrylab` model API (`--model larrylab/<registry-name>`).
"""

from larrylab.evals._modelapi import LarrylabModelAPI
from larrylab.evals.tasks import (
    ackoff_dikw,
    error_recovery,
    jtbd,
    problem_clarification,
    red_team,
    s_curve,
    tta,
)

__all__ = [
    "LarrylabModelAPI",
    "ackoff_dikw",
    "error_recovery",
    "jtbd",
    "problem_clarification",
    "red_team",
    "s_curve",
    "tta",
]
