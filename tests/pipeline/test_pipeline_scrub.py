"""Personal data scrubbing: e-mails, phone numbers and URLs carrying secrets, and person names
through Presidio where it is installed (or a tally that says they were not scrubbed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from larrylab.pipeline import names as names_module
from larrylab.pipeline.manifest import Tally
from larrylab.pipeline.names import NameScrubbing, find_name_model, load_name_scrubbing
from larrylab.pipeline.scrub import scrub_messages, scrub_text, scrubbing_report

KEEP_NAMES = NameScrubbing(None, "not scrubbed (test)", "names_not_scrubbed_test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jo.doe+pws@mail.example.co.uk today", "write to [EMAIL] today"),
        ("call 555-123-4567 or (555) 123-4567", "call [PHONE] or [PHONE]"),
        ("my cell is +44 20 7946 0958.", "my cell is [PHONE]."),
        ("doc: https://x.io/share?token=abc123&v=2 ok", "doc: [URL] ok"),
        ("https://user:pw@host.example/a", "[URL]"),
        ("see https://drive.example.com/d/aB3dE5fG7hJ9kL1mN3pQ5rS7tU9/view", "see [URL]"),
    ],
)
def test_personal_data_is_replaced(text: str, expected: str) -> None:
    assert scrub_text(text, names=KEEP_NAMES) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Read https://en.wikipedia.org/wiki/Jobs_to_be_done first.",
        "On 2024-01-15 we sold 1200000 units at 3.14159265 each.",
        "We interviewed 12 nurses in 3 hospitals over 2 weeks.",
        # what the dataset card lists as never scrubbed
        "Acme Corp, 12 Baker Street, London; born 1 May 1990; order 123456789012.",
        "my key is sk-live-0123456789abcdefghijklmnop, ask @ana_l",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub_text(text, names=KEEP_NAMES) == text


def test_messages_are_copied_and_counted() -> None:
    tally = Tally()
    messages = [
        {"role": "user", "content": "I am ana@example.org"},
        {"role": "user", "content": [{"type": "text", "text": "call 555-123-4567"}]},
    ]
    out = scrub_messages(messages, tally, KEEP_NAMES)
    assert out[0]["content"] == "I am [EMAIL]" and out[1]["content"][0]["text"] == "call [PHONE]"
    assert messages[0]["content"] == "I am ana@example.org"  # the input is not changed
    assert tally.counts == {
        "scrubbed_emails": 1,
        "scrubbed_phones": 1,
        "names_not_scrubbed_test": 2,  # one counter saying so, counting the texts it applies to
    }


def _without_presidio(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "presidio_analyzer" else real(name, *a),
    )


def test_without_presidio_names_are_kept_and_the_tally_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_presidio(monkeypatch)
    names = load_name_scrubbing()
    assert not names.active
    assert names.description.startswith("not scrubbed (presidio not installed: ")
    assert "pip install 'larrylab[privacy]'" in names.description
    tally = Tally()
    messages = [{"role": "user", "content": "I am Ana Lopez"}] * 3
    out = scrub_messages(messages, tally, names)
    assert out[0]["content"] == "I am Ana Lopez"
    assert tally.counts == {"names_not_scrubbed_presidio_not_installed": 3}
    report = scrubbing_report(names)
    assert "names" not in report["placeholders"] and report["names"] == names.description


def test_presidio_without_a_spacy_model_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    json_spec = real("json")
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: json_spec if name == "presidio_analyzer" else real(name, *a),
    )
    found = find_name_model(("larrylab_no_such_model",))
    assert found.model is None
    assert found.description == (
        "not scrubbed (presidio installed, but none of the spaCy models larrylab_no_such_model)"
    )
    assert found.counter == "names_not_scrubbed_no_spacy_model"


def test_checking_for_presidio_imports_neither_presidio_nor_spacy() -> None:
    code = (
        "import sys; from larrylab.pipeline.names import load_name_scrubbing; "
        "n = load_name_scrubbing(('larrylab_no_such_model',)); "
        "from larrylab.pipeline.scrub import scrub_text; scrub_text('Ana', names=n); "
        "print(n.active, sorted(m for m in ('spacy', 'presidio_analyzer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False []"


def test_the_default_is_checked_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    names_module.name_scrubbing.cache_clear()
    monkeypatch.setattr(names_module, "load_name_scrubbing", lambda: calls.append(1) or KEEP_NAMES)
    try:
        for _ in range(3):
            scrub_messages([{"role": "user", "content": "hi"}])
    finally:
        names_module.name_scrubbing.cache_clear()
    assert calls == [1]


# with Presidio installed (the `privacy` extra): a real AnalyzerEngine over a blank spaCy
# pipeline saved to disk (no model download), with a deny-list recognizer for the names


@pytest.fixture
def presidio_analyzer(tmp_path: Path) -> Any:
    pytest.importorskip("presidio_analyzer", reason="the `privacy` extra is not installed")
    spacy = pytest.importorskip("spacy")
    from presidio_analyzer import PatternRecognizer

    model = tmp_path / "blank_en"
    spacy.blank("en").to_disk(model)
    analyzer = names_module.presidio_analyzer(str(model))
    people = ["Ana Lopez", "Bob", "Larry", "Christensen"]
    analyzer.registry.add_recognizer(PatternRecognizer(supported_entity="PERSON", deny_list=people))
    return analyzer


def test_presidio_names_are_replaced_and_counted(presidio_analyzer: Any) -> None:
    names = NameScrubbing(
        names_module.presidio_detector(presidio_analyzer), "Presidio (test)", "scrubbed_names"
    )
    tally = Tally()
    messages = [
        {"role": "system", "content": "You are Larry."},
        {"role": "user", "content": "Hi Larry, I'm Ana Lopez (ana@example.org); Bob is my CTO."},
        {"role": "assistant", "content": "Christensen's jobs theory fits, Ana Lopez."},
    ]
    out = scrub_messages(messages, tally, names)
    assert [m["content"] for m in out] == [
        "You are Larry.",  # the coach's name is kept
        "Hi Larry, I'm [NAME] ([EMAIL]); [NAME] is my CTO.",
        "Christensen's jobs theory fits, [NAME].",  # an author the PWS tools cite is kept
    ]
    assert tally.counts == {"scrubbed_names": 3, "scrubbed_emails": 1}
    report = scrubbing_report(names)
    assert report["placeholders"]["names"] == "[NAME]" and report["names"] == "Presidio (test)"


MODEL_PACKAGE = """\
import spacy


def load(**overrides):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": name} for name in ("Ana", "Larry")])
    ruler.add_patterns([{"label": "ORG", "pattern": "Acme"}])
    return nlp
"""


def test_an_installed_spacy_model_is_found_loaded_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path a deployment takes: an installed model package (here a rule-based spaCy
    pipeline whose entity ruler tags PERSON) is found, loaded by Presidio and named."""
    pytest.importorskip("presidio_analyzer", reason="the `privacy` extra is not installed")
    pytest.importorskip("spacy")
    (tmp_path / "larrylab_test_model").mkdir()
    (tmp_path / "larrylab_test_model/__init__.py").write_text(MODEL_PACKAGE)
    info = tmp_path / "larrylab_test_model-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: larrylab_test_model\nVersion: 0.0.1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = load_name_scrubbing(("larrylab_no_such_model", "larrylab_test_model"))
    assert names.active and names.counter == "scrubbed_names"
    assert names.description.startswith("Presidio 2.")
    assert names.description.endswith(" with the spaCy model larrylab_test_model 0.0.1")
    tally = Tally()
    out = scrub_text("Larry, Ana from Acme here.", tally, names)
    assert out == "Larry, [NAME] from Acme here."  # the coach's name and a company are kept
    assert tally.counts == {"scrubbed_names": 1}
