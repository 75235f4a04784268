"""Experiments: their definitions, ratings, per-arm summaries, the statistical report."""

from larrylab.experiments._analysis import (
    AnalysisOptions,
    CandidateResult,
    ExperimentAnalysis,
    analysis_dict,
    analyze,
)
from larrylab.experiments._experiments import (
    ConflictError,
    ExperimentPublic,
    NotFoundError,
    create_experiment,
    get_experiment,
    list_experiments,
    list_routes,
    set_route,
    update_experiment,
)
from larrylab.experiments._feedback import (
    Attribution,
    attribute_request,
    attribute_thread,
    replay_feedback,
    upsert_feedback,
)
from larrylab.experiments._summary import ArmSummary, summarize, summarize_on

__all__ = [
    "AnalysisOptions",
    "ArmSummary",
    "Attribution",
    "CandidateResult",
    "ConflictError",
    "ExperimentAnalysis",
    "ExperimentPublic",
    "NotFoundError",
    "analysis_dict",
    "analyze",
    "attribute_request",
    "attribute_thread",
    "create_experiment",
    "get_experiment",
    "list_experiments",
    "list_routes",
    "replay_feedback",
    "set_route",
    "summarize",
    "summarize_on",
    "update_experiment",
    "upsert_feedback",
]
