"""Filter step 2, deduplication: exact copies and near-duplicates (MinHash LSH, datasketch).

Texts are compared on their user and assistant messages (the system prompt is shared by
design). Exact duplicates match after normalisation (case, punctuation, spacing); near
duplicates are found with MinHash signatures (datasketch) over word shingles, banded for
locality-sensitive hashing with 99% recall at the threshold, and confirmed by the signatures'
estimate of the Jaccard similarity. Existing training data is added first as a reference, so
nothing already trained on comes back.

The index is built in one batch once every text is known: signatures live in one array and
only bands shared by two texts or more are indexed, so memory stays near the signatures' size
(about 0.5 kB per text) instead of a hash table entry per text and band.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class DedupOptions:
    """How similar counts as a duplicate.

    Attributes:
        threshold: Jaccard similarity of word shingles at or above which two texts are
            near-duplicates.
        shingle: Words per shingle.
        num_perm: MinHash permutations (more: finer estimates, more memory).
    """

    threshold: float = 0.8
    shingle: int = 3
    num_perm: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(
                f"the near-duplicate threshold must be in (0, 1], got {self.threshold}"
            )
        if self.shingle < 1 or self.num_perm < 16:
            raise ValueError("shingle must be at least 1 and num_perm at least 16")


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters and digits)."""
    return _WORD.findall(text.lower())


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """LSH `(bands, rows)` that find a pair at `threshold` with probability `recall`.

    Among those, the pair that proposes the fewest candidates well below the threshold (at
    0.6 of it); candidates are confirmed by their MinHash estimate, so misses matter more.
    """
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            if 1 - (1 - threshold**rows) ** bands < recall:
                continue
            noise = 1 - (1 - (0.6 * threshold) ** rows) ** bands
            if best is None or noise < best[0]:
                best = (noise, bands, rows)
    return (best[1], best[2]) if best else (num_perm, 1)


class Deduplicator:
    """Collects texts, then tells which ones repeat or nearly repeat an earlier one.

    Texts added with `reference=True` (existing training data) are never reported; the others
    are checked in the order they were added, each against the earlier texts that were kept.
    """

    def __init__(self, options: DedupOptions) -> None:
        self.options = options
        template = MinHash(num_perm=options.num_perm)
        self._perms, self._scheme = template.permutations, template.scheme
        self._keys: list[str] = []
        self._signatures = bytearray()  # one row of `num_perm` hash values per text
        self._dtype = template.hashvalues.dtype
        self._first: dict[bytes, int] = {}
        self._exact: dict[int, int] = {}
        self._references = 0

    def __len__(self) -> int:
        return len(self._keys)

    def _signature(self, tokens: list[str]) -> np.ndarray:
        n = self.options.shingle
        if len(tokens) >= n:
            shingles = {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
        else:
            shingles = {" ".join(tokens)}
        mh = MinHash(num_perm=self.options.num_perm, permutations=self._perms, scheme=self._scheme)
        mh.update_batch(s.encode("utf-8") for s in shingles)
        return mh.hashvalues

    def add(self, key: str, text: str, *, reference: bool = False) -> int:
        """Remember a text; returns its index (references must come before the rest)."""
        if reference and self._references != len(self._keys):
            raise ValueError("reference texts must be added before the texts to check")
        index = len(self._keys)
        tokens = words(text)
        digest = hashlib.blake2b(" ".join(tokens).encode("utf-8"), digest_size=16).digest()
        first = self._first.setdefault(digest, index)
        if first != index:
            self._exact[index] = first
        self._keys.append(key)
        self._signatures += self._signature(tokens).astype(self._dtype, copy=False).tobytes()
        self._references += int(reference)
        return index

    def duplicates(self) -> dict[int, str]:
        """`{index: reason}` for every checked text that repeats an earlier kept one."""
        if not self._keys:
            return {}
        sig = np.frombuffer(self._signatures, dtype=self._dtype).reshape(len(self._keys), -1)
        bands, rows = lsh_params(self.options.threshold, self.options.num_perm)
        groups = np.empty((bands, len(sig)), dtype=np.int64)
        for band in range(bands):
            block = np.ascontiguousarray(sig[:, band * rows : (band + 1) * rows])
            keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
            _, groups[band] = np.unique(keys, return_inverse=True)
        shared = np.stack([np.bincount(g)[g] > 1 for g in groups])
        members: list[dict[int, list[int]]] = [{} for _ in range(bands)]
        out: dict[int, str] = {}
        for j in range(len(sig)):
            if j >= self._references and j in self._exact:
                out[j] = f"exact duplicate of {self._keys[self._exact[j]]}"
                continue
            in_bands = np.flatnonzero(shared[:, j])
            reason = None if j < self._references else self._near(sig, j, in_bands, groups, members)
            if reason is not None:
                out[j] = reason
                continue
            for k in in_bands:
                members[k].setdefault(int(groups[k, j]), []).append(j)
        return out

    def _near(
        self,
        sig: np.ndarray,
        j: int,
        in_bands: np.ndarray,
        groups: np.ndarray,
        members: list[dict[int, list[int]]],
    ) -> str | None:
        best: tuple[float, int] | None = None
        seen: set[int] = set()
        for band in in_bands:
            for i in members[band].get(int(groups[band, j]), ()):
                if i in seen:
                    continue
                seen.add(i)
                similarity = float(np.mean(sig[i] == sig[j]))
                if similarity >= self.options.threshold and (best is None or similarity > best[0]):
                    best = (similarity, i)
        if best is None:
            return None
        return f"near-duplicate of {self._keys[best[1]]} (Jaccard about {best[0]:.2f})"
