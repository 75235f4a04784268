"""The store's tables (SQLModel). One name for one thing, in code, API, database and dashboard.

Transcripts are stored as a tree of messages per thread: each message row holds one message
and a pointer to its parent, keyed by a hash of the chain that leads to it. A request points at
the last message of its prompt and at its reply, so storage grows linearly with a conversation
and every prompt can be rebuilt exactly as the model saw it (edits and regenerations branch).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (the store keeps UTC everywhere)."""
    return datetime.now(UTC)


class ModelEntry(SQLModel, table=True):
    """A model larrylab can route to: how to reach it, and its registry state."""

    __tablename__ = "model"

    name: str = Field(primary_key=True, max_length=200)
    api: str = Field(default="openai", max_length=20)
    base_url: str | None = Field(default=None, max_length=2000)
    upstream_model: str | None = Field(default=None, max_length=200)
    api_key_env: str | None = Field(default=None, max_length=200)
    litellm_model: str | None = Field(default=None, max_length=200)
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    ca_file: str | None = Field(default=None, max_length=2000)
    verify: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=true())
    )
    state: str = Field(default="registered", max_length=20)
    lineage: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Route(SQLModel, table=True):
    """A name Larry calls; its model serves it when no experiment is running on it."""

    __tablename__ = "route"

    name: str = Field(primary_key=True, max_length=200)
    model: str = Field(foreign_key="model.name", max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)


class Experiment(SQLModel, table=True):
    """An A/B test splitting a route's threads between arms."""

    __tablename__ = "experiment"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=200)
    route: str = Field(index=True, max_length=200)
    seed: str = Field(max_length=200)
    status: str = Field(default="running", max_length=20)
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    # What a candidate arm does with a request using a feature it cannot serve (tools, a cached
    # context, non-text parts): "control" (the control serves it) or "strip" (the candidate
    # answers without the feature).
    unsupported: str = Field(
        default="control", sa_column=Column(String(10), nullable=False, server_default="control")
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    stopped_at: datetime | None = None


class Arm(SQLModel, table=True):
    """One arm of an experiment: a model and its share of traffic."""

    __tablename__ = "arm"
    __table_args__ = (UniqueConstraint("experiment_id", "model"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    model: str = Field(foreign_key="model.name", max_length=200)
    weight: float
    control: bool = False
    position: int = 0


class Thread(SQLModel, table=True):
    """A conversation thread: the unit of assignment."""

    __tablename__ = "thread"

    id: str = Field(primary_key=True, max_length=256)
    unit_source: str = Field(max_length=10)
    route: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    """One message of a thread's transcript; `id` hashes the chain of messages up to it.

    Keyed by (thread_id, id): a thread's messages are read together, and one index per stored
    message is all the request log pays for transcripts."""

    __tablename__ = "message"
    __table_args__ = (PrimaryKeyConstraint("thread_id", "id", name="pk_message"),)

    id: str = Field(max_length=64)
    thread_id: str = Field(max_length=256)
    parent_id: str | None = Field(default=None, max_length=64)
    depth: int
    role: str = Field(max_length=20)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class RequestLog(SQLModel, table=True):
    """One chat completion request through the router, as the client saw it."""

    __tablename__ = "request"
    __table_args__ = (
        # Few indexes, each filled in time order but thread_id's: the request log writes fast.
        # Per-arm figures come from the rollups (`arm_stat`, `arm_thread`, `arm_latency`).
        Index("ix_request_created_at", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    thread_id: str = Field(index=True, max_length=256)
    unit_source: str = Field(max_length=10)
    route: str = Field(max_length=200)
    experiment: str | None = Field(default=None, max_length=200)
    arm: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    upstream_model: str | None = Field(default=None, max_length=200)
    stream: bool = False
    status: str = Field(max_length=20)
    http_status: int
    error_class: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    fallback_from: str | None = Field(default=None, max_length=200)
    latency_ms: float
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    overhead_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # The client's protocol: "openai" (`/v1/chat/completions`) or "gemini" (`:generateContent`).
    protocol: str = Field(
        default="openai", sa_column=Column(String(10), nullable=False, server_default="openai")
    )
    # Why a candidate arm of the request's experiment could not serve it as sent (features,
    # comma-separated: "tools", "cached_content", "non_text_parts", ...); None if it could.
    ineligible: str | None = Field(default=None, max_length=200)
    # Whether those features were dropped so that the candidate answered (`unsupported: strip`).
    stripped: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    prompt_message_id: str | None = Field(default=None, max_length=64)
    reply_message_id: str | None = Field(default=None, max_length=64)
    created_at: datetime
    finished_at: datetime


class Feedback(SQLModel, table=True):
    """A rating of one request or of a whole thread, by a source: 1-5 stars (`score`), a thumb
    up or down (`thumb`: 1 or 0), or both, with optional categories and a comment."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("target", "source", name="uq_feedback_target_source"),
        Index("ix_feedback_experiment_arm", "experiment", "arm"),
    )

    id: int | None = Field(default=None, primary_key=True)
    target: str = Field(max_length=300)
    request_id: str | None = Field(default=None, index=True, max_length=64)
    thread_id: str = Field(index=True, max_length=256)
    experiment: str | None = Field(default=None, max_length=200)
    arm: str | None = Field(default=None, max_length=200)
    score: int | None = None
    thumb: int | None = None
    # Named judgements of the reply, as JSON: {"accuracy": true, "depth": false, ...}.
    categories: str = Field(
        default="{}", sa_column=Column(Text, nullable=False, server_default="{}")
    )
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    source: str = Field(default="user", max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Imported(SQLModel, table=True):
    """Lineage of history imported from elsewhere (Larry's Chainlit database): one row per
    thread, message and rating taken from a source, keyed by the source's own id, so that a
    rerun imports only what is new."""

    __tablename__ = "imported"
    __table_args__ = (
        PrimaryKeyConstraint("source", "kind", "source_id", name="pk_imported"),
        Index("ix_imported_thread_id", "thread_id"),
    )

    source: str = Field(max_length=40)  # "chainlit"
    kind: str = Field(max_length=20)  # "thread", "message" or "rating"
    # The source's id: a Chainlit thread, step or feedback id; a JSON rating's
    # `<message_id>:<feedback_type>`.
    source_id: str = Field(max_length=300)
    thread_id: str = Field(max_length=256)
    message_id: str | None = Field(default=None, max_length=64)
    bot: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=40)  # the bot's PWS category
    imported_at: datetime = Field(default_factory=utcnow)


class ArmStat(SQLModel, table=True):
    """Running totals of one metric of one experiment arm: n, sum and sum of squares."""

    __tablename__ = "arm_stat"

    experiment: str = Field(primary_key=True, max_length=200)
    arm: str = Field(primary_key=True, max_length=200)
    metric: str = Field(primary_key=True, max_length=40)
    n: int = Field(default=0, sa_type=BigInteger)
    sum: float = 0.0
    sum_squares: float = 0.0


class ArmThread(SQLModel, table=True):
    """Each thread an experiment arm has served, once (distinct threads per arm)."""

    __tablename__ = "arm_thread"

    experiment: str = Field(primary_key=True, max_length=200)
    arm: str = Field(primary_key=True, max_length=200)
    thread_id: str = Field(primary_key=True, max_length=256)


class ArmLatency(SQLModel, table=True):
    """How many successful requests of one experiment arm fell in one latency bucket
    (`rollups._sketch`: log-spaced, 1% relative accuracy); percentiles and histograms read it."""

    __tablename__ = "arm_latency"

    experiment: str = Field(primary_key=True, max_length=200)
    arm: str = Field(primary_key=True, max_length=200)
    metric: str = Field(primary_key=True, max_length=40)
    bucket: int = Field(primary_key=True)
    n: int = Field(default=0, sa_type=BigInteger)


class AuditEvent(SQLModel, table=True):
    """One recorded change: a model's state transition, a rollout step, a gate decision."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_kind_subject", "kind", "subject"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20)
    subject: str = Field(max_length=200)
    action: str = Field(max_length=40)
    from_state: str | None = Field(default=None, max_length=20)
    to_state: str | None = Field(default=None, max_length=20)
    actor: str = Field(max_length=200)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: datetime = Field(default_factory=utcnow)


class EvalSet(SQLModel, table=True):
    """A frozen held-out eval set, known by the hash of its content."""

    __tablename__ = "eval_set"

    hash: str = Field(primary_key=True, max_length=64)
    version: str = Field(max_length=40)
    n_samples: int
    created_at: datetime = Field(default_factory=utcnow)


class EvalResult(SQLModel, table=True):
    """One task's scores for one model on one eval set, from one eval run."""

    __tablename__ = "eval_result"
    __table_args__ = (Index("ix_eval_result_model_set_task", "model", "eval_set_hash", "task"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, max_length=64)
    model: str = Field(max_length=200)
    eval_set_hash: str = Field(max_length=64)
    task: str = Field(max_length=100)
    category: str = Field(max_length=40)
    judge: str | None = Field(default=None, max_length=200)
    n_samples: int
    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    metrics: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    sample_scores: str = Field(
        default="{}", sa_column=Column(Text, nullable=False, server_default="{}")
    )
    log_path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class GateDecision(SQLModel, table=True):
    """The promotion gate's verdict on a candidate against a baseline and an eval set."""

    __tablename__ = "gate_decision"

    id: int | None = Field(default=None, primary_key=True)
    candidate: str = Field(index=True, max_length=200)
    baseline: str = Field(max_length=200)
    eval_set_hash: str = Field(max_length=64)
    passed: bool
    reasons: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    evidence: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    actor: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class PipelineStage(SQLModel, table=True):
    """One finished (or failed) stage of a pipeline run, keyed by its output folder."""

    __tablename__ = "pipeline_stage"
    __table_args__ = (Index("ix_pipeline_stage_run_dir", "run_dir"),)

    id: int | None = Field(default=None, primary_key=True)
    run_dir: str = Field(sa_column=Column(Text, nullable=False))
    stage: str = Field(max_length=40)
    status: str = Field(max_length=20)
    counts: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    manifest: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    started_at: datetime
    finished_at: datetime


class Rollout(SQLModel, table=True):
    """A guarded promotion: a canary experiment ramped step by step, or rolled back."""

    __tablename__ = "rollout"
    __table_args__ = (Index("ix_rollout_route_status", "route", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    route: str = Field(max_length=200)
    candidate: str = Field(foreign_key="model.name", max_length=200)
    baseline: str = Field(foreign_key="model.name", max_length=200)
    experiment: str = Field(max_length=200)
    gate_decision_id: int | None = Field(default=None, foreign_key="gate_decision.id")
    status: str = Field(max_length=20)
    weight: float
    steps: str = Field(max_length=200)
    step_started_at: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
