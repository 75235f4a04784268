"""The PWS methodology's vocabulary, shared by the router's simulator, the pipeline and evals.

One name for one thing: these category ids are the same in the eval set, the training data,
the simulator's corpus, the database and the dashboard.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "problem_clarification",
    "tta",
    "jtbd",
    "s_curve",
    "ackoff_dikw",
    "red_team",
    "error_recovery",
)
