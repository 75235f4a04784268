"""Settings from `LARRYLAB_*` environment variables and the YAML config file.

The YAML file declares models, routes and experiments. It bootstraps the database once;
after that the database is the source of truth and the admin API changes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./larrylab.db"
DEFAULT_CONFIG_PATH = Path("larrylab.yaml")


class ConfigError(Exception):
    """A config file (or setting) that larrylab cannot start with; the message says why."""


class Settings(BaseSettings):
    """Process settings, read from `LARRYLAB_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="LARRYLAB_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    config: Path | None = None
    api_keys: str = ""
    admin_key: str = ""
    log_batch_size: int = Field(default=5000, ge=1)
    log_flush_interval_s: float = Field(default=1.0, gt=0)
    log_flush_interval_max_s: float = Field(default=4.0, gt=0)
    log_queue_size: int = Field(default=10_000, ge=1)
    log_writer: Literal["process", "thread"] = "process"
    log_journal_max_rows: int = Field(default=200_000, ge=1)
    log_indexer_nice: int = Field(default=10, ge=0, le=19)
    routing_refresh_s: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    spill_dir: str = "larrylab-spill"
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    log_requests: bool = True
    replay_interval_s: float = Field(default=5.0, gt=0)
    rollout_interval_s: float = Field(default=60.0, ge=0)
    rollout_steps: str = "10,25,50,100"
    rollout_step_min_s: float = Field(default=3600.0, ge=0)
    rollout_min_requests: int = Field(default=100, ge=0)

    @field_validator("rollout_steps")
    @classmethod
    def _check_steps(cls, value: str) -> str:
        try:
            steps = [float(s) for s in value.split(",") if s.strip()]
        except ValueError:
            raise ValueError("rollout_steps must be comma-separated percentages") from None
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(steps):
            raise ValueError("rollout_steps must be increasing percentages in (0, 100]")
        return value

    @property
    def rollout_step_weights(self) -> tuple[float, ...]:
        """The canary ramp's weights, in percent."""
        return tuple(float(s) for s in self.rollout_steps.split(",") if s.strip())

    @property
    def client_keys(self) -> frozenset[str]:
        """The set of accepted client keys (empty: no client auth)."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    def config_path(self) -> Path | None:
        """The YAML config file to use: `LARRYLAB_CONFIG`, else `./larrylab.yaml` if present."""
        if self.config is not None:
            return self.config
        return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """How to reach one model: an OpenAI-compatible endpoint or any litellm model."""

    api: Literal["openai", "litellm"] = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    litellm_model: str | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _litellm_implies_api(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("litellm_model") and "api" not in data:
            return {**data, "api": "litellm"}
        return data

    @model_validator(mode="after")
    def _check_target(self) -> ModelSpec:
        if self.api == "openai":
            if not self.base_url:
                raise ValueError("an `api: openai` model needs `base_url`")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(
                    f"base_url must start with http:// or https://, got {self.base_url!r}"
                )
        elif not self.litellm_model:
            raise ValueError("an `api: litellm` model needs `litellm_model`")
        return self


class ArmSpec(_Strict):
    """One arm of an experiment: a model and its traffic weight."""

    model: str
    weight: float = Field(ge=0)
    control: bool = False


class ExperimentSpec(_Strict):
    """An A/B experiment on a route."""

    name: str = Field(min_length=1, max_length=200)
    route: str = Field(min_length=1, max_length=200)
    arms: list[ArmSpec] = Field(min_length=1)
    seed: str | None = None
    status: Literal["running", "stopped"] = "running"
    description: str = ""

    @model_validator(mode="after")
    def _check_arms(self) -> ExperimentSpec:
        check_arms(self.arms)
        return self


class RouteSpec(_Strict):
    """A route Larry calls by name; `model` serves it when no experiment runs."""

    model: str


class ConfigFile(_Strict):
    """The whole YAML config file."""

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    experiments: list[ExperimentSpec] = Field(default_factory=list)

    @field_validator("models", "routes")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name or len(name) > 200:
                raise ValueError(f"name {name!r} must be 1 to 200 characters")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> ConfigFile:
        for route, spec in self.routes.items():
            if spec.model not in self.models:
                raise ValueError(f"routes.{route}.model: unknown model {spec.model!r}")
        names: set[str] = set()
        running: set[str] = set()
        for i, exp in enumerate(self.experiments):
            if exp.name in names:
                raise ValueError(f"experiments[{i}].name: duplicate experiment {exp.name!r}")
            names.add(exp.name)
            if exp.route in self.models:
                raise ValueError(f"experiments[{i}].route: {exp.route!r} is already a model name")
            if exp.status == "running":
                if exp.route in running:
                    raise ValueError(
                        f"experiments[{i}].route: route {exp.route!r} already has "
                        "a running experiment"
                    )
                running.add(exp.route)
            for j, arm in enumerate(exp.arms):
                if arm.model not in self.models:
                    raise ValueError(
                        f"experiments[{i}].arms[{j}].model: unknown model {arm.model!r}"
                    )
        return self


def check_arms(arms: list[ArmSpec]) -> None:
    """Raise ValueError unless the arms form a valid experiment (used by config and admin API)."""
    controls = [a for a in arms if a.control]
    if len(controls) != 1:
        raise ValueError(f"exactly one arm must be the control, found {len(controls)}")
    models = [a.model for a in arms]
    if len(set(models)) != len(models):
        raise ValueError("each model may appear in only one arm")
    if sum(a.weight for a in arms) <= 0:
        raise ValueError("arm weights must add up to more than 0")


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_config_file(path: Path) -> ConfigFile:
    """Read and validate a YAML config file; raise ConfigError naming the file, key and problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with models/routes/experiments")
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            where = _location(tuple(err["loc"]))
            problems.append(f"{path}: {where}: {msg}" if where else f"{path}: {msg}")
        raise ConfigError("\n".join(problems)) from None
