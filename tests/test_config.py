"""The YAML config file: valid files load, bad ones name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

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
