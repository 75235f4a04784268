"""Decontamination: keep the held-out eval set out of everything the pipeline pays for or keeps.

Two checks, both over lower-case words of the user and assistant messages (system prompts are
left out on both sides: Larry's system prompt is in every conversation):

- exact overlap: a text sharing an n-gram (13 words by default) with an eval item, or, for an
  item shorter than n words (at least `MIN_PHRASE_WORDS`), containing all of its words in order;
- near-duplicates: MinHash LSH (datasketch) over word shingles of each eval item's user
  messages (and of the whole item when it has several messages), queried with every passage of
  the text (runs of consecutive sentences of a comparable size), confirmed by the exact Jaccard
  similarity of the shingle sets. A reworded eval question is caught although no long n-gram
  survives.

Shingles are the 1- to `DEFAULT_SHINGLE`-word runs inside each sentence (single words by
default: rewording moves words around more than it replaces them), so a passage's set is the
union of its sentences' sets and its MinHash the element-wise minimum of theirs. On the
built-in held-out set, 29 reworded eval questions score 0.62 to 0.92 against their item and
373 ordinary PWS conversations (the demo's learners, the simulator's replies and variations,
the tests' threads) at most 0.39; `DEFAULT_NEAR_THRESHOLD` sits between. A question that
keeps an eval item's wording and swaps only its subject ("Where is our product on the
S-curve?") scores about 0.5 and may be dropped: a lost example costs less than a leaked one.

The eval set comes from a JSONL file (`messages` plus optional `id` and `category` per line) or,
by default, from the evals package's held-out set. The generate stage checks exported records
before any request is planned for them and every variation it makes; the filter checks
everything again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
from datasketch import MinHash

from larrylab.pipeline.dedup import lsh_params, words
from larrylab.pipeline.manifest import Tally
from larrylab.pipeline.records import ORIGIN_EXPORT, ORIGIN_GENERATED, Record, json_sha256

DEFAULT_NGRAM = 13
DEFAULT_NEAR_THRESHOLD = 0.5
DEFAULT_SHINGLE = 1
NUM_PERM = 128
MIN_PHRASE_WORDS = 6
CONTAMINATED = "contaminated"
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_QUOTE_CHARS = 160
_MIX = np.uint64(0x100000001B3)  # folds a band's hash values into one 64-bit key


class EvalSetError(ValueError):
    """An eval-set file that cannot be read; the message says which line and why."""


@dataclass(frozen=True)
class DecontamOptions:
    """How records are checked against the held-out eval set.

    Attributes:
        eval_set: A JSONL eval set; None uses the evals package's held-out set.
        ngram: Length of the exact word n-gram overlap that counts as contamination.
        threshold: Jaccard similarity of word shingles at or above which a passage is a
            near-duplicate of an eval item.
    """

    eval_set: Path | None = None
    ngram: int = DEFAULT_NGRAM
    threshold: float = DEFAULT_NEAR_THRESHOLD

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ValueError(f"the n-gram length must be at least 1, got {self.ngram}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"the contamination threshold must be in (0, 1], got {self.threshold}")

    def params(self) -> dict[str, Any]:
        """The settings as manifest parameters (the eval set is listed as an input instead)."""
        return {
            "ngram": self.ngram,
            "near_duplicate_threshold": self.threshold,
            "shingle_words": DEFAULT_SHINGLE,
            "num_perm": NUM_PERM,
        }


@dataclass(frozen=True)
class EvalItem:
    """One held-out eval example: its id, category and messages."""

    id: str
    messages: tuple[tuple[str, str], ...]
    category: str | None = None

    def text(self) -> str:
        """The user and assistant text of the item."""
        return "\n".join(self.contents())

    def contents(self) -> list[str]:
        """The user and assistant messages' contents, in order."""
        return [content for role, content in self.messages if role != "system"]

    def passages(self) -> list[str]:
        """What a near-duplicate is compared with: each user message, and the whole item.

        The item's assistant turns count only as part of the whole: on their own they are
        short coaching questions that ordinary conversations repeat.
        """
        contents = self.contents()
        users = [content for role, content in self.messages if role == "user"]
        return users + (["\n".join(contents)] if len(contents) > 1 or not users else [])


def _messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        return (("user", value),)
    if not isinstance(value, list) or not value:
        raise EvalSetError(f"{where}: 'messages' must be a non-empty list of messages")
    out: list[tuple[str, str]] = []
    for i, message in enumerate(value):
        role, content = _field(message, "role"), _field(message, "content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise EvalSetError(f"{where}: message {i} needs a string 'role' and 'content'")
        out.append((role, content))
    return tuple(out)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def eval_item(obj: Any, index: int, where: str) -> EvalItem:
    """An EvalItem from a JSON object, or an object with `messages` (or `input`) attributes."""
    raw = _field(obj, "messages") or _field(obj, "input")
    if raw is None:
        raise EvalSetError(f"{where}: the item has no 'messages'")
    messages = _messages(raw, where)
    target = _field(obj, "target")
    if isinstance(target, str) and target:
        messages = (*messages, ("assistant", target))
    item_id, category = _field(obj, "id"), _field(obj, "category")
    return EvalItem(
        id=str(item_id) if item_id is not None else f"item-{index}",
        messages=messages,
        category=str(category) if category is not None else None,
    )


def load_eval_file(path: Path) -> list[EvalItem]:
    """The items of a JSONL eval-set file."""
    if not path.is_file():
        raise EvalSetError(f"eval set {path} does not exist")
    items: list[EvalItem] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise EvalSetError(f"{where}: not valid JSON") from None
            if not isinstance(data, dict):
                raise EvalSetError(f"{where}: each line must be a JSON object")
            items.append(eval_item(data, number, where))
    return items


def default_eval_items() -> tuple[list[EvalItem], str | None]:
    """The evals package's held-out set, or none with a warning when it is not available."""
    try:
        from larrylab.evals.evalset import load_eval_items
    except ImportError:
        return [], "the evals package is not available: no decontamination against a held-out set"
    try:
        raw = load_eval_items()
    except ValueError as exc:
        raise EvalSetError(f"the held-out eval set cannot be used: {exc}") from None
    return [eval_item(obj, i, f"held-out item {i}") for i, obj in enumerate(raw)], None


@dataclass
class EvalSet:
    """The eval items used for decontamination, where they came from, and any warning."""

    items: list[EvalItem]
    source: str
    warning: str | None = None

    def describe(self) -> dict[str, Any]:
        """The set as a stage input: its source, content hash and size."""
        return {"source": self.source, "sha256": eval_set_hash(self.items), "items": len(self)}

    def __len__(self) -> int:
        return len(self.items)


def load_eval_set(path: Path | None) -> EvalSet:
    """The eval set in the JSONL file `path`, or the evals package's held-out set (None)."""
    if path is not None:
        return EvalSet(load_eval_file(path), str(path))
    items, warning = default_eval_items()
    return EvalSet(items, "larrylab.evals held-out set" if warning is None else "none", warning)


def eval_set_hash(items: Sequence[EvalItem]) -> str:
    """A hash of the eval items' content (it changes when the set changes)."""
    return json_sha256([[i.id, list(map(list, i.messages))] for i in items])


def ngrams(tokens: Sequence[str], n: int) -> Iterable[str]:
    """The word n-grams of `tokens` (none when there are fewer than `n` tokens)."""
    return (" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentences(text: str) -> list[tuple[str, list[str]]]:
    """`(sentence, its words)` for each sentence of `text` that has words."""
    out = []
    for raw in _SENTENCE_BREAK.split(text):
        tokens = words(raw)
        if tokens:
            out.append((raw.strip(), tokens))
    return out


def shingles(tokens: Sequence[str], size: int = DEFAULT_SHINGLE) -> set[str]:
    """The 1- to `size`-word runs of one sentence's words."""
    return {
        " ".join(tokens[i : i + n]) for n in range(1, size + 1) for i in range(len(tokens) - n + 1)
    }


def jaccard(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float:
    """The Jaccard similarity of two sets (0 when both are empty)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


@dataclass(frozen=True, slots=True)
class _Passage:
    """An indexed eval passage: its item, shingles and length in sentences."""

    item: str
    shingles: frozenset[str]
    sentences: int


class Decontaminator:
    """Knows the eval set's n-grams and passages and tells which eval item a text overlaps.

    An item shorter than `n` words has no n-gram; it contaminates a text that contains all
    of its words in order, when it has at least `MIN_PHRASE_WORDS` of them. Passages shorter
    than that are not indexed for near-duplicates either; items with nothing to check are
    counted in `short_items`.
    """

    def __init__(
        self,
        items: Sequence[EvalItem],
        n: int = DEFAULT_NGRAM,
        *,
        threshold: float = DEFAULT_NEAR_THRESHOLD,
    ) -> None:
        DecontamOptions(ngram=n, threshold=threshold)  # validates both
        self.n = n
        self.threshold = threshold
        self._owner: dict[str, str] = {}
        self._phrases: dict[int, dict[str, str]] = {}
        self.short_items = 0
        template = MinHash(num_perm=NUM_PERM)
        self._perms, self._scheme = template.permutations, template.scheme
        self._bands, self._rows = lsh_params(threshold, NUM_PERM)
        self._passages: list[_Passage] = []
        signatures: list[np.ndarray] = []
        for item in items:
            tokens = words(item.text())
            if len(tokens) >= n:
                for gram in ngrams(tokens, n):
                    self._owner.setdefault(gram, item.id)
            elif len(tokens) >= MIN_PHRASE_WORDS:
                self._phrases.setdefault(len(tokens), {}).setdefault(" ".join(tokens), item.id)
            else:
                self.short_items += 1
            for passage in item.passages():
                signature = self._add_passage(item.id, passage)
                if signature is not None:
                    signatures.append(signature)
        self._index: list[dict[int, list[int]]] = [{} for _ in range(self._bands)]
        self._known: list[np.ndarray] = []
        if signatures:
            keys = self._band_keys(np.stack(signatures))
            for band, index in enumerate(self._index):
                for number, key in enumerate(keys[:, band].tolist()):
                    index.setdefault(key, []).append(number)
                self._known.append(np.unique(keys[:, band]))
        sizes = [len(p.shingles) for p in self._passages]
        self._smallest = min(sizes, default=0)
        self._largest = max(sizes, default=0)
        self._max_sentences = max((p.sentences for p in self._passages), default=0) + 2

    @classmethod
    def from_options(cls, evals: EvalSet, options: DecontamOptions) -> Decontaminator:
        """A decontaminator for `evals` with the options' n-gram length and threshold."""
        return cls(evals.items, options.ngram, threshold=options.threshold)

    def __len__(self) -> int:
        """How many eval passages are indexed for near-duplicates."""
        return len(self._passages)

    def _add_passage(self, item: str, text: str) -> np.ndarray | None:
        """Remember an eval passage long enough to check; returns its MinHash signature."""
        parts = sentences(text)
        if sum(len(tokens) for _, tokens in parts) < MIN_PHRASE_WORDS:
            return None
        shingled = frozenset(s for _, tokens in parts for s in shingles(tokens))
        self._passages.append(_Passage(item, shingled, len(parts)))
        return self._signature(shingled)

    def _signature(self, shingled: Iterable[str]) -> np.ndarray:
        mh = MinHash(num_perm=NUM_PERM, permutations=self._perms, scheme=self._scheme)
        mh.update_batch([s.encode("utf-8") for s in shingled])
        return mh.hashvalues

    def _band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """One 64-bit key per LSH band of each signature (a row per signature)."""
        rows = signatures[:, : self._bands * self._rows].astype(np.uint64)
        rows = rows.reshape(len(signatures), self._bands, self._rows)
        keys = rows[:, :, 0].copy()
        for r in range(1, self._rows):
            keys = (keys * _MIX) ^ rows[:, :, r]
        return keys

    def check(self, text: str) -> str | None:
        """Why `text` is contaminated (the eval item it overlaps and how), or None."""
        return self.exact(text) or self.near(text)

    def exact(self, text: str) -> str | None:
        """The eval item `text` shares an n-gram with (or contains whole), or None."""
        if not self._owner and not self._phrases:
            return None
        tokens = words(text)
        for gram in ngrams(tokens, self.n):
            owner = self._owner.get(gram)
            if owner is not None:
                return f"shares a {self.n}-gram with eval item {owner}: {gram!r}"
        for length, phrases in self._phrases.items():
            for gram in ngrams(tokens, length):
                owner = phrases.get(gram)
                if owner is not None:
                    return f"contains all of eval item {owner}: {gram!r}"
        return None

    def near(self, text: str) -> str | None:
        """The eval item a passage of `text` nearly repeats (the most similar one), or None.

        Passages are runs of consecutive sentences whose shingle count could reach the
        threshold against some indexed passage (Jaccard is at most the ratio of the sizes).
        """
        parts = sentences(text)
        if not self._passages or not parts:
            return None
        sets = [shingles(tokens) for _, tokens in parts]
        spans, keys = self._windows(sets)
        if not spans:
            return None
        hits = np.zeros(len(spans), dtype=bool)
        for band, known in enumerate(self._known):
            hits |= np.isin(keys[:, band], known)
        best: tuple[float, int, int, int] | None = None
        for w in np.flatnonzero(hits).tolist():
            i, j = spans[w]
            union = set().union(*sets[i : j + 1])
            candidates = {
                index
                for band, known in enumerate(self._index)
                for index in known.get(int(keys[w, band]), ())
            }
            for index in candidates:
                similarity = jaccard(union, self._passages[index].shingles)
                if similarity >= self.threshold and (best is None or similarity > best[0]):
                    best = (similarity, index, i, j)
        if best is None:
            return None
        similarity, index, i, j = best
        quote = " ".join(raw for raw, _ in parts[i : j + 1])
        if len(quote) > _QUOTE_CHARS:
            quote = quote[: _QUOTE_CHARS - 3] + "..."
        item = self._passages[index].item
        return f"near-duplicate of eval item {item} (jaccard {similarity:.2f}): {quote!r}"

    def _windows(self, sets: list[set[str]]) -> tuple[list[tuple[int, int]], np.ndarray]:
        """The `(first, last)` sentences of each passage worth checking, and their band keys.

        A passage is worth checking when its shingle count could reach the threshold against
        some indexed passage (Jaccard is at most the ratio of the two sizes).
        """
        low, high = self.threshold * self._smallest, self._largest / self.threshold
        signatures = [self._signature(s) for s in sets]
        spans: list[tuple[int, int]] = []
        chosen: list[np.ndarray] = []
        for i in range(len(sets)):
            union: set[str] = set()
            signature = signatures[i]
            for j in range(i, min(len(sets), i + self._max_sentences)):
                union |= sets[j]
                signature = np.minimum(signature, signatures[j])
                if len(union) > high:
                    break
                if len(union) >= low:
                    spans.append((i, j))
                    chosen.append(signature)
        if not spans:
            return [], np.empty((0, self._bands), dtype=np.uint64)
        return spans, self._band_keys(np.stack(chosen))


class Screen:
    """Checks a stage's records against the eval set and writes each contaminated one out.

    Contamination follows lineage: once an exported record is found contaminated, every
    variation made from it (`meta['source_record']`) is dropped too. Dropped records go to
    `dropped` as `{"step": "contaminated", "reason", "record"}` lines; the counts go to
    `tally` (`dropped_contaminated`, and `contaminated_<origin>` per origin) and the first
    `keep_reasons` reasons to `reasons`, for the manifest.
    """

    def __init__(
        self, decon: Decontaminator, dropped: IO[bytes], tally: Tally, keep_reasons: int = 100
    ) -> None:
        self.decon = decon
        self.reasons: list[dict[str, str]] = []
        self._dropped = dropped
        self._tally = tally
        self._keep = keep_reasons
        self._tainted: dict[str, str] = {}
        tally.add(f"dropped_{CONTAMINATED}", 0)

    def reason(self, rec: Record) -> str | None:
        """Why `rec` must not be kept (`contaminated: ...`), or None."""
        source = rec.meta.get("source_record") if rec.origin == ORIGIN_GENERATED else None
        if isinstance(source, str) and source in self._tainted:
            return f"{CONTAMINATED}: variation of {source} ({self._tainted[source]})"
        why = self.decon.check(rec.text())
        return None if why is None else f"{CONTAMINATED}: {why}"

    def passes(self, rec: Record) -> bool:
        """True if `rec` is clean; otherwise it is written to the dropped file and counted."""
        reason = self.reason(rec)
        if reason is None:
            return True
        if rec.origin == ORIGIN_EXPORT:
            self._tainted[rec.id] = reason.removeprefix(f"{CONTAMINATED}: ")
        self._tally.add(f"dropped_{CONTAMINATED}")
        self._tally.add(f"{CONTAMINATED}_{rec.origin}")
        row = {"step": CONTAMINATED, "reason": reason, "record": asdict(rec)}
        self._dropped.write(orjson.dumps(row) + b"\n")
        if len(self.reasons) < self._keep:
            self.reasons.append({"record": rec.id, "origin": rec.origin, "reason": reason})
        return False
