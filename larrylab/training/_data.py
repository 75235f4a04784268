"""The training run's inputs: the dataset folder as conversations, its hash, the code version.

Split from `train.py` so that reading and checking data needs neither torch nor TRL (only
`datasets`, imported inside `load_conversations`).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import orjson

import larrylab


class TrainingError(Exception):
    """Training cannot start or finish; the message says why and what to do."""


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_hash(dataset_dir: Path) -> dict[str, str | None]:
    """The dataset's identity: its manifest's hash, else a hash over all its files."""
    manifest = dataset_dir / "manifest.json"
    if manifest.is_file():
        try:
            fingerprint = orjson.loads(manifest.read_bytes()).get("fingerprint")
        except (orjson.JSONDecodeError, AttributeError):
            fingerprint = None
        return {
            "dataset_manifest_hash": sha256_file(manifest),
            "dataset_fingerprint": fingerprint,
            "hash_of": "manifest.json",
        }
    digest = hashlib.sha256()
    for path in sorted(p for p in dataset_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dataset_dir)).encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return {
        "dataset_manifest_hash": digest.hexdigest(),
        "dataset_fingerprint": None,
        "hash_of": "files",
    }


def code_version() -> dict[str, str | None]:
    """larrylab's version and, when it runs from a git checkout, the commit."""
    root = Path(larrylab.__file__).resolve().parent.parent
    try:
        git = ["git", "-C", str(root), "rev-parse", "HEAD"]
        out = subprocess.run(git, capture_output=True, text=True, timeout=5, check=False)
        commit = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"larrylab": larrylab.__version__, "git_commit": commit}


def _check_conversation(split: str, index: int, messages: Any) -> None:
    where = f"row {index} of split {split!r}"
    if not isinstance(messages, list) or not messages:
        raise TrainingError(f"{where}: `messages` must be a non-empty list of chat messages")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise TrainingError(f"{where}: each message needs a role of system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise TrainingError(f"{where}: each message needs text `content`")
    if not any(m["role"] == "assistant" for m in messages):
        raise TrainingError(f"{where}: the conversation has no assistant reply to learn from")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TrainingError(f"{path} line {n} is not JSON: {exc}") from exc
        if not isinstance(row, dict) or "messages" not in row:
            raise TrainingError(f"{path} line {n} has no `messages`")
        rows.append({"messages": row["messages"]})
    return rows


def load_conversations(dataset_dir: Path, *, seed: int) -> Any:
    """The dataset as a `DatasetDict` with `train` and `validation` splits of `messages`."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if not dataset_dir.is_dir():
        raise TrainingError(f"dataset folder {dataset_dir} does not exist")
    if (dataset_dir / "dataset_dict.json").is_file() or (dataset_dir / "state.json").is_file():
        loaded = load_from_disk(str(dataset_dir))
        splits = dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}
    elif (dataset_dir / "train.jsonl").is_file():
        splits = {
            name: Dataset.from_list(_read_jsonl(dataset_dir / f"{name}.jsonl"))
            for name in ("train", "validation")
            if (dataset_dir / f"{name}.jsonl").is_file()
        }
    else:
        raise TrainingError(
            f"{dataset_dir} holds no dataset: expected a DatasetDict saved with save_to_disk "
            "(dataset_dict.json) or train.jsonl and validation.jsonl"
        )
    if "train" not in splits:
        raise TrainingError(f"{dataset_dir} has no `train` split")
    for name, split in splits.items():
        if "messages" not in split.column_names:
            raise TrainingError(f"split {name!r} in {dataset_dir} has no `messages` column")
        for i, messages in enumerate(split["messages"]):
            _check_conversation(name, i, messages)
    splits = {
        n: s.select_columns(["messages"]) for n, s in splits.items() if n in ("train", "validation")
    }
    if "validation" not in splits or len(splits["validation"]) == 0:
        if len(splits["train"]) < 2:
            raise TrainingError("the dataset needs at least 2 conversations (train and validation)")
        parts = splits["train"].train_test_split(test_size=0.1, seed=seed)
        splits = {"train": parts["train"], "validation": parts["test"]}
    return DatasetDict(splits)
