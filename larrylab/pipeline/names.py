"""Person names found by Microsoft Presidio with a spaCy model, when the deployment has them.

Presidio and a spaCy English model are optional (the `privacy` extra plus a model install, see
docs/pipeline.md). Whether they are installed is checked without importing either
(`find_name_model`); only then is the model loaded, once per process (`name_scrubbing`).
Without them names are not scrubbed, and the `NameScrubbing` says so and why.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

NAME_PLACEHOLDER = "[NAME]"
SCRUBBED_NAMES = "scrubbed_names"
# Presidio's default model first; any installed one of these will do.
SPACY_MODELS = ("en_core_web_lg", "en_core_web_trf", "en_core_web_md", "en_core_web_sm")
# Names that are teaching material or the coach's own, not personal data: kept as written.
PUBLIC_NAMES = ("Larry", "Russell Ackoff", "Ackoff", "Clayton Christensen", "Christensen")
PRIVACY_INSTALL = "pip install 'larrylab[privacy]' and a spaCy model (docs/pipeline.md)"

NameDetector = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class NameModel:
    """What `find_name_model` found.

    Attributes:
        model: The spaCy model Presidio will load, or None when names cannot be scrubbed.
        description: What scrubs names, or `not scrubbed (why)`.
        counter: The tally counter of the texts this applies to (`scrubbed_names` counts the
            names replaced instead).
    """

    model: str | None
    description: str
    counter: str


@dataclass(frozen=True)
class NameScrubbing:
    """Whether and how person names are scrubbed.

    Attributes:
        detector: The (start, end) spans of the person names in a text; None: names are kept.
        description: What scrubs names (`Presidio 2.2.366 with the spaCy model ...`), or
            `not scrubbed (why)`; stage manifests and the dataset card quote it.
        counter: The tally counter: `scrubbed_names` (names replaced) when `detector` is set,
            else `names_not_scrubbed_<why>` (texts whose names were left as written).
    """

    detector: NameDetector | None
    description: str
    counter: str

    @property
    def active(self) -> bool:
        """True when names are scrubbed."""
        return self.detector is not None


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown version"


def find_name_model(models: Sequence[str] = SPACY_MODELS) -> NameModel:
    """Which of `models` Presidio can use here, found without importing Presidio or spaCy."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        return NameModel(
            None,
            f"not scrubbed (presidio not installed: {PRIVACY_INSTALL})",
            "names_not_scrubbed_presidio_not_installed",
        )
    for model in models:
        if importlib.util.find_spec(model) is not None:
            return NameModel(
                model,
                f"Presidio {_version('presidio-analyzer')} with the spaCy model "
                f"{model} {_version(model)}",
                SCRUBBED_NAMES,
            )
    return NameModel(
        None,
        f"not scrubbed (presidio installed, but none of the spaCy models {', '.join(models)})",
        "names_not_scrubbed_no_spacy_model",
    )


def presidio_analyzer(model: str) -> Any:
    """A Presidio `AnalyzerEngine` that finds PERSON entities with the spaCy model `model`.

    Only the spaCy recognizer is registered: the other personal data is scrubbed by
    `larrylab.pipeline.scrub`'s own patterns, and loading Presidio's full registry is slow.
    """
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=["PERSON"]))
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def presidio_detector(analyzer: Any, keep: Sequence[str] = PUBLIC_NAMES) -> NameDetector:
    """A name detector over a Presidio `AnalyzerEngine`: its PERSON spans, except `keep`."""
    allow = list(keep)

    def detect(text: str) -> list[tuple[int, int]]:
        results = analyzer.analyze(text=text, language="en", entities=["PERSON"], allow_list=allow)
        return sorted((r.start, r.end) for r in results if r.entity_type == "PERSON")

    return detect


def load_name_scrubbing(models: Sequence[str] = SPACY_MODELS) -> NameScrubbing:
    """How this installation scrubs names: Presidio with the first of `models` installed."""
    found = find_name_model(models)
    if found.model is None:
        return NameScrubbing(None, found.description, found.counter)
    try:
        analyzer = presidio_analyzer(found.model)
    except Exception as exc:  # a broken model install is reported with the data, not raised
        return NameScrubbing(
            None,
            f"not scrubbed (presidio could not load {found.model}: {exc})",
            "names_not_scrubbed_presidio_failed",
        )
    return NameScrubbing(presidio_detector(analyzer), found.description, SCRUBBED_NAMES)


@functools.cache
def name_scrubbing() -> NameScrubbing:
    """`load_name_scrubbing()`, done once per process (loading a spaCy model takes seconds)."""
    return load_name_scrubbing()
