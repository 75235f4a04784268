"""Settings from `LARRYLAB_*` environment variables and the YAML config file.

The YAML file declares models, routes and experiments. It bootstraps the database once;
after that the database is the source of truth and the admin API changes it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./larrylab.db"
DEFAULT_CONFIG_PATH = Path("larrylab.yaml")

# The rules every model, route and experiment follows, in the config file, the admin API and the
# CLI alike (issue #27). Names travel in URL paths, response headers and log lines, so they are
# short plain ASCII; numbers are finite and bounded, so sums and ratios of them stay finite.
MAX_NAME_CHARS = 200
NAME_RULE = (
    f"1 to {MAX_NAME_CHARS} characters: ASCII letters, digits, '.', '_', ':' and '-', "
    "starting with a letter, digit or '_'"
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:-]*")
MAX_WEIGHT = 1_000_000.0
MAX_TIMEOUT_S = 3600.0
MAX_URL_CHARS = 2000
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_KEY_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?]+")
DEFAULT_ALLOWED_KEY_ENVS = "*_API_KEY"
RESERVED_ENV_PREFIX = "LARRYLAB_"


def is_loopback(address: str) -> bool:
    """True for `localhost` and loopback IP addresses (IPv6 with or without brackets): the
    addresses `serve` and `dashboard` may bind without keys."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class ConfigError(Exception):
    """A config file (or setting) that larrylab cannot start with; the message says why."""


def _shown(value: str, limit: int = 40) -> str:
    """`value` quoted, cut short: an error message never echoes 5,000 characters back."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"


def check_text(value: str) -> str:
    """Refuse control characters (newlines, NUL, escapes) in a free-form identifier."""
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError(f"{_shown(value)} must not contain control characters")
    return value


def check_name(value: str, what: str = "name") -> str:
    """Refuse a model, route or experiment name that breaks `NAME_RULE`."""
    if len(value) > MAX_NAME_CHARS or not _NAME.fullmatch(value):
        raise ValueError(f"{what} {_shown(value)} is not valid: use {NAME_RULE}")
    return value


def _check_host(host: str) -> None:
    """Refuse a host that is neither an IP address nor a DNS name."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"base_url host {_shown(host)} is not a valid host name")


def check_base_url(url: str) -> str:
    """Refuse a base URL the router could not call: http(s), a host, a valid port, plain ASCII."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"base_url must be at most {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(
            f"base_url {_shown(url)} must be ASCII without spaces or control characters"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, got {_shown(url)}")
    if not parts.hostname:
        raise ValueError(f"base_url {_shown(url)} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not carry credentials: name them in api_key_env")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"base_url {_shown(url)} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"base_url {_shown(url)} is not a valid URL: {exc}") from None
    _check_host(parts.hostname)
    return url


def check_ca_file(path: str) -> str:
    """Refuse a `ca_file` that is not a readable PEM bundle of CA certificates; the path made
    absolute (the router may run from another directory)."""
    if len(path) > MAX_URL_CHARS or not path.strip() or any(ord(c) < 32 for c in path):
        raise ValueError(f"ca_file {_shown(path, 300)} is not a file path")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"ca_file {_shown(path, 300)} does not exist or is not a file")
    try:
        ssl.create_default_context(cafile=str(resolved))
    except PermissionError:
        raise ValueError(f"ca_file {_shown(path, 300)} is not readable") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(
            f"ca_file {_shown(path, 300)} holds no PEM CA certificate larrylab can load: {exc}"
        ) from None
    return str(resolved)


def check_key_env_name(name: str) -> str:
    """Refuse an `api_key_env` that is not an environment variable name, or is larrylab's own."""
    if len(name) > MAX_NAME_CHARS or not _KEY_ENV.fullmatch(name):
        raise ValueError(f"api_key_env {_shown(name)} is not an environment variable name")
    if name.upper().startswith(RESERVED_ENV_PREFIX):
        raise ValueError(
            f"api_key_env {name!r} names a larrylab setting ({RESERVED_ENV_PREFIX}*), never a "
            "provider key: name the provider's variable, such as OPENAI_API_KEY"
        )
    return name


def _key_env_patterns(allowed: str) -> list[str]:
    return [p.strip() for p in allowed.split(",") if p.strip()]


def check_key_env(name: str, allowed: str) -> None:
    """Refuse an `api_key_env` that `LARRYLAB_ALLOWED_KEY_ENVS` (`allowed`) does not allow."""
    check_key_env_name(name)
    if not any(fnmatchcase(name, p) for p in _key_env_patterns(allowed)):
        raise ValueError(
            f"api_key_env {name!r} is not a key variable this deployment allows: "
            f"LARRYLAB_ALLOWED_KEY_ENVS is {allowed!r}"
        )


Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(check_text)]
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]
TimeoutS = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)]
BaseUrl = Annotated[str, AfterValidator(check_base_url)]
KeyEnv = Annotated[str, AfterValidator(check_key_env_name)]
CaFile = Annotated[str, AfterValidator(check_ca_file)]
Description = Annotated[str, Field(max_length=10_000)]


REMOVED_SETTINGS = {
    "LARRYLAB_LOG_WRITER": "the thread writer is gone; every router journals its requests and "
    "its indexer process stores them (docs/resilience.md)",
    "LARRYLAB_LOG_QUEUE_SIZE": "it bounded the thread writer's queue, which is gone; "
    "LARRYLAB_LOG_JOURNAL_MAX_ROWS bounds the journal",
}
"""Settings that no longer exist: `Settings` warns if the environment still sets them."""


class Settings(BaseSettings):
    """Process settings, read from `LARRYLAB_*` environment variables."""

    # Errors never echo the input: it holds the keys.
    model_config = SettingsConfigDict(
        env_prefix="LARRYLAB_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    config: Path | None = None
    api_keys: str = ""
    admin_key: str = ""
    allowed_key_envs: str = DEFAULT_ALLOWED_KEY_ENVS
    log_batch_size: int = Field(default=5000, ge=1)
    log_flush_interval_s: float = Field(default=1.0, gt=0)
    log_flush_interval_max_s: float = Field(default=4.0, gt=0)
    log_journal_max_rows: int = Field(default=200_000, ge=1)
    log_indexer_nice: int = Field(default=10, ge=0, le=19)
    routing_refresh_s: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # every route but chat completions (admin, feedback): small bodies only
    max_api_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    journal_dir: str = "larrylab-journal"
    spill_dir: str = "larrylab-spill"
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    log_requests: bool = True
    replay_interval_s: float = Field(default=5.0, gt=0)
    rollout_interval_s: float = Field(default=60.0, ge=0)
    rollout_steps: str = "10,25,50,100"
    rollout_step_min_s: float = Field(default=3600.0, ge=0)
    rollout_min_requests: int = Field(default=100, ge=0)
    # The key of the pipeline's pseudonyms of thread and user ids (HMAC-SHA256); empty: each
    # run folder gets a random one, kept in `<out>/.pseudonym-key`.
    pseudonym_key: str = ""

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

    @field_validator("allowed_key_envs")
    @classmethod
    def _check_key_envs(cls, value: str) -> str:
        patterns = _key_env_patterns(value)
        if not patterns or not all(_KEY_ENV_PATTERN.fullmatch(p) for p in patterns):
            raise ValueError(
                "LARRYLAB_ALLOWED_KEY_ENVS must be a comma list of variable names or patterns "
                "(letters, digits, '_', '*', '?'), such as '*_API_KEY,HF_TOKEN'"
            )
        return value

    @model_validator(mode="after")
    def _warn_of_removed_settings(self) -> Settings:
        for name in sorted(REMOVED_SETTINGS.keys() & os.environ.keys()):
            logging.getLogger(__name__).warning("%s is ignored: %s", name, REMOVED_SETTINGS[name])
        return self

    @model_validator(mode="after")
    def _admin_key_is_not_a_client_key(self) -> Settings:
        if self.admin_key.strip() and self.admin_key.strip() in self.client_keys:
            raise ValueError(
                "LARRYLAB_ADMIN_KEY must differ from every client key in LARRYLAB_API_KEYS: "
                "otherwise every client is an admin"
            )
        return self

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


GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
"""Where an `api: gemini` model is called when it names no `base_url`."""


class ModelSpec(_Strict):
    """How to reach one model: an OpenAI-compatible endpoint, Gemini's native API (`api:
    gemini`), or any litellm model."""

    api: Literal["openai", "gemini", "litellm"] = "openai"
    base_url: BaseUrl | None = None
    model: Text | None = None
    api_key_env: KeyEnv | None = None
    litellm_model: Text | None = None
    connect_timeout_s: TimeoutS = 5.0
    first_token_timeout_s: TimeoutS = 30.0
    total_timeout_s: TimeoutS = 120.0
    ca_file: CaFile | None = None
    verify: bool = True

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
        elif self.api == "gemini":
            if self.litellm_model:
                raise ValueError("an `api: gemini` model is called natively: drop `litellm_model`")
        elif not self.litellm_model:
            raise ValueError("an `api: litellm` model needs `litellm_model`")
        return self


class ArmSpec(_Strict):
    """One arm of an experiment: a model and its traffic weight."""

    model: Name
    weight: Weight
    control: bool = False


class ExperimentSpec(_Strict):
    """An A/B experiment on a route."""

    name: Name
    route: Name
    arms: list[ArmSpec] = Field(min_length=1)
    seed: Text | None = None
    status: Literal["running", "stopped"] = "running"
    description: Description = ""
    # A request using a feature a candidate arm cannot serve (tools, a cached context, non-text
    # parts) goes to the control ("control"), or to the candidate without it ("strip").
    unsupported: Literal["control", "strip"] = "control"

    @model_validator(mode="after")
    def _check_arms(self) -> ExperimentSpec:
        check_arms(self.arms)
        return self


class RouteSpec(_Strict):
    """A route Larry calls by name; `model` serves it when no experiment runs."""

    model: Name


class ConfigFile(_Strict):
    """The whole YAML config file."""

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    experiments: list[ExperimentSpec] = Field(default_factory=list)

    @field_validator("models", "routes")
    @classmethod
    def _names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        what = "model name" if info.field_name == "models" else "route name"
        for name in value:
            check_name(name, what)
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


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Each problem of a ValidationError as (where, message), without pydantic's decorations."""
    return [
        (_location(tuple(err["loc"])), str(err["msg"]).removeprefix("Value error, "))
        for err in exc.errors()
    ]


def validation_message(exc: ValidationError) -> str:
    """A ValidationError as sentences, one per line: `where: problem`."""
    return "\n".join(f"{w}: {m}" if w else m for w, m in validation_problems(exc))


def parse_arm(text: str) -> ArmSpec:
    """An arm from the CLI's `MODEL=WEIGHT` or `MODEL=WEIGHT:control`; ValueError says why not."""
    model, sep, rest = text.partition("=")
    weight, _, flag = rest.partition(":")
    if not sep or flag not in ("", "control"):
        raise ValueError(f"arm {text!r} must look like MODEL=WEIGHT or MODEL=WEIGHT:control")
    try:
        return ArmSpec.model_validate(
            {"model": model, "weight": weight.strip(), "control": flag == "control"}
        )
    except ValidationError as exc:
        raise ValueError(f"arm {_shown(text)}: {validation_message(exc)}") from None


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
        problems = [
            f"{path}: {where}: {msg}" if where else f"{path}: {msg}"
            for where, msg in validation_problems(exc)
        ]
        raise ConfigError("\n".join(problems)) from None
