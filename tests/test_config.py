"""The YAML config file: valid files load, bad ones name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from larrylab.config import ConfigError, Settings, load_config_file

GOOD = """
models:
  gemini-flash: {api: openai, base_url: https://example.test/v1beta/openai, api_key_env: GEMINI_API_KEY,
                 model: gemini-2.5-flash}
  larry-v1:     {api: openai, base_url: http://gpu-box:11434/v1, model: larry-v1}
  other:        {litellm_model: anthropic/claude-sonnet}
experiments:
  - {name: larry-v1-vs-gemini, route: larry, arms: [{model: gemini-flash, weight: 90, control: true},
                                                     {model: larry-v1, weight: 10}]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "larrylab.yaml"
    path.write_text(text)
    return path


def test_the_issue_example_loads(tmp_path: Path) -> None:
    cfg = load_config_file(_write(tmp_path, GOOD))
    assert cfg.models["other"].api == "litellm"
    assert cfg.models["gemini-flash"].api_key_env == "GEMINI_API_KEY"
    exp = cfg.experiments[0]
    assert [(a.model, a.weight, a.control) for a in exp.arms] == [
        ("gemini-flash", 90, True),
        ("larry-v1", 10, False),
    ]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("models: {a: {api: openai}}", "models.a", "needs `base_url`"),
        ("models: {a: {base_url: ftp://x}}", "models.a", "must start with http"),
        ("models: {a: {base_url: http://x, colour: red}}", "models.a.colour", "Extra inputs"),
        (
            "models: {a: {base_url: http://x}}\nexperiments: [{name: e, route: r, arms: [{model: zz, weight: 1, "
            "control: true}]}]",
            "experiments.arms[0].model",
            "unknown model 'zz'",
        ),
        (
            "models: {a: {base_url: http://x}}\nexperiments: [{name: e, route: r, arms: [{model: a, weight: 1}]}]",
            "experiments[0]",
            "exactly one arm must be the control",
        ),
        (
            "models: {a: {base_url: http://x}}\nexperiments: [{name: e, route: r, arms: [{model: a, weight: -1, "
            "control: true}]}]",
            "experiments[0].arms[0].weight",
            "greater than or equal to 0",
        ),
        ("routes: {larry: {model: nope}}", "routes.larry.model", "unknown model 'nope'"),
        ("models: [1, 2]", "models", "valid dictionary"),
        ("- just a list", "", "top level must be a mapping"),
        ("models: {a: {base_url: http://x}\n", "", "not valid YAML"),
    ],
)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert str(path) in message
    assert key.replace("experiments.arms", "experiments[0].arms") in message
    assert problem in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "nope.yaml")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("LARRYLAB_API_KEYS", "k1, k2,,")
    settings = Settings()
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.client_keys == frozenset({"k1", "k2"})


@pytest.mark.parametrize(
    ("model", "key", "problem"),
    [
        ("{base_url: http://x, connect_timeout_s: .inf}", "models.a.connect_timeout_s", "finite"),
        ("{base_url: http://x, total_timeout_s: 1e300}", "models.a.total_timeout_s", "3600"),
        ("{base_url: 'http://'}", "models.a.base_url", "host"),
        ("{base_url: 'http://a b c/v1'}", "models.a.base_url", "space"),
        ("{base_url: ''}", "models.a.base_url", "must start with http"),
        (
            "{base_url: http://x, api_key_env: LARRYLAB_ADMIN_KEY}",
            "models.a.api_key_env",
            "LARRYLAB_",
        ),
        ('{base_url: http://x, model: "a\\tb"}', "models.a.model", "control character"),
    ],
)
def test_bad_model_values_name_the_key(tmp_path: Path, model: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(_write(tmp_path, f"models: {{a: {model}}}"))
    assert f": {key}: " in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize(
    ("weights", "problem"),
    [(".inf, 1", "finite"), ("1e309, 1", "finite"), ("1e308, 1e308", "1000000"), (".nan, 1", "")],
)
def test_weights_must_be_finite_and_bounded(tmp_path: Path, weights: str, problem: str) -> None:
    w1, w2 = weights.split(", ")
    text = (
        "models: {a: {base_url: http://x}, b: {base_url: http://x}}\n"
        "experiments: [{name: e, route: r, arms: [{model: a, weight: " + w1 + ", control: true},"
        " {model: b, weight: " + w2 + "}]}]"
    )
    with pytest.raises(ConfigError) as info:
        load_config_file(_write(tmp_path, text))
    assert "experiments[0].arms[0].weight" in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "models:\n  ? " + "m" * 5000 + "\n  : {base_url: http://x}",  # YAML's long-key form
        "models: {'bad name': {base_url: http://x}}",
        "models: {a: {base_url: http://x}}\nroutes: {'r\\u0007': {model: a}}",
        "models: {a: {base_url: http://x}}\nroutes: {" + "r" * 201 + ": {model: a}}",
        "models: {a: {base_url: http://x}}\n"
        "experiments: [{name: 'e 1', route: r, arms: [{model: a, weight: 1, control: true}]}]",
        "models: {a: {base_url: http://x}}\n"
        "experiments: [{name: e, route: "
        + "r" * 201
        + ", arms: [{model: a, weight: 1, control: true}]}]",
    ],
)
def test_names_follow_one_rule(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(_write(tmp_path, text))
    message = str(info.value)
    assert "letters, digits" in message and len(message) < 1000


def test_settings_refuse_an_admin_key_that_is_a_client_key() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(api_keys="k1, s3cret-shared", admin_key="s3cret-shared")
    assert "LARRYLAB_ADMIN_KEY must differ from every client key" in str(info.value)
    assert "s3cret-shared" not in str(info.value)
    assert Settings(api_keys="k1", admin_key="other").admin_key == "other"


def test_key_variables_a_config_may_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from larrylab.release._prepare import prepare_store

    config = _write(tmp_path, "models: {m: {base_url: 'http://x/v1', api_key_env: MY_TOKEN}}")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", config=config)
    with pytest.raises(ConfigError) as info:
        prepare_store(settings)
    assert "MY_TOKEN" in str(info.value) and "LARRYLAB_ALLOWED_KEY_ENVS" in str(info.value)
    monkeypatch.setenv("LARRYLAB_ALLOWED_KEY_ENVS", "MY_TOKEN")
    report = prepare_store(settings)
    assert report.bootstrap is not None and report.bootstrap.added == ["model m"]
    with pytest.raises(ValidationError, match="LARRYLAB_ALLOWED_KEY_ENVS"):
        Settings(allowed_key_envs="OK_*, bad name")
