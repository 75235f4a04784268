"""Fine-tune a base model on the PWS dataset with TRL's SFTTrainer and a PEFT LoRA adapter.

The dataset is the data pipeline's folder: a `DatasetDict` saved with `save_to_disk` (splits
`train`, `validation`; a `messages` column), or `train.jsonl`/`validation.jsonl`. The loss is
on assistant turns only, with validation loss per epoch and early stopping. A run writes:

    OUT/adapter/     adapter_model.safetensors, adapter_config.json, tokenizer, chat template
    OUT/merged/      the base with the adapter merged in (with --merge)
    OUT/base/        the tiny base model (with --tiny)
    (a GGUF base, `smollm2-135m` or FILE.gguf, is converted once into the model cache)
    OUT/metrics.json losses per epoch, best epoch, timings
    OUT/run.json     lineage: base model, dataset hash, settings, code version

torch, transformers, peft and trl (the `train` extra) are imported only inside functions.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from larrylab.training._data import (
    TrainingError,
    code_version,
    dataset_hash,
    load_conversations,
)

DEFAULT_BASE = "meta-llama/Llama-3.2-3B-Instruct"
TARGET_PRESETS: dict[str, list[str] | str] = {
    "qv": ["q_proj", "v_proj"],
    "all-linear": "all-linear",
}
_TRAIN_PACKAGES = ("torch", "transformers", "peft", "trl", "tokenizers", "datasets")
_BASE_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class TrainOptions:
    """How to train. `qlora=None` means: QLoRA when a CUDA GPU is present."""

    dataset: Path
    out: Path
    base: str | None = None
    tiny: bool = False
    qlora: bool | None = None
    targets: str = "qv"
    epochs: int = 3
    lr: float | None = None
    seed: int = 42
    merge: bool = False
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048
    patience: int = 2
    assistant_only_loss: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05

    def learning_rate(self) -> float:
        """The learning rate: as given, else 2e-4 (5e-3 for the randomly initialised tiny model)."""
        if self.lr is not None:
            return self.lr
        return 5e-3 if self.tiny else 2e-4


@dataclass
class TrainResult:
    """What a finished run wrote and measured."""

    out_dir: Path
    adapter_dir: Path
    merged_dir: Path | None
    metrics: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)


def require_train_extra() -> None:
    """Raise TrainingError naming the missing packages when the `train` extra is absent."""
    import importlib.util

    missing = [p for p in _TRAIN_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise TrainingError(
            f"training needs the `train` extra ({', '.join(missing)} missing): "
            "pip install 'larrylab[train]'"
        )


def _hub_offline() -> bool:
    import os

    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(
        (f or "").strip().lower() in ("1", "true", "yes", "on") for f in flags
    )


def resolve_base(base: str, *, log: Callable[[str], None] = print) -> Path:
    """The local folder of a base model: `base` itself, the cached conversion of a GGUF base
    (`smollm2-135m` or a `.gguf` file), or the hub id's snapshot (cached or downloaded).
    Raises TrainingError naming what is missing."""
    from larrylab.training._gguf import convert_gguf, is_gguf_base

    if is_gguf_base(base):
        return convert_gguf(base, log=log)
    path = Path(base).expanduser()
    if path.exists() or base.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise TrainingError(f"base model folder {path} does not exist or has no config.json")
        return path.resolve()
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(base, local_files_only=True, allow_patterns=_BASE_FILES))
    except HFValidationError as exc:
        raise TrainingError(f"{base!r} is neither a model folder nor a hub model id") from exc
    except (LocalEntryNotFoundError, OSError):
        pass
    hint = "copy the model folder here and pass it with --base DIR, or use --tiny"
    if _hub_offline():
        raise TrainingError(
            f"base model {base!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and the hub is offline (HF_HUB_OFFLINE): run `hf download {base}` where there "
            f"is network, or {hint}"
        )
    try:
        return Path(snapshot_download(base, allow_patterns=_BASE_FILES))
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrainingError(
            f"cannot download base model {base!r} from the Hugging Face hub ({first}); "
            f"gated models need HF_TOKEN; otherwise {hint}"
        ) from exc


def _bf16_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def load_model(base_dir: Path, *, qlora: bool) -> Any:
    """The base model: 4-bit NF4 with double quantisation (QLoRA) or full precision."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    else:
        kwargs["dtype"] = torch.bfloat16 if _bf16_gpu() else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), **kwargs)
    except ImportError as exc:
        raise TrainingError(f"cannot load the base model for QLoRA: {exc}") from exc
    if qlora:
        _keep_4bit_trainable_on_cpu(model)
    return model


def _keep_4bit_trainable_on_cpu(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for AVX512-BF16 CPUs during evaluation.

    On such CPUs an evaluation pass converts each Linear4bit's weight to a packed layout for
    good, and the packed kernel has no backward: every later training step would then lose
    the gradient through the base layers (torch warns "an autograd kernel was not registered").
    """
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _prepare_tokenizer(base_dir: Path, opts: TrainOptions) -> tuple[Any, bool]:
    """The base's tokenizer, its template marked for assistant-only loss; and whether the
    template accepts a system message."""
    from transformers import AutoTokenizer

    from larrylab.training._chat_templates import (
        ChatTemplateError,
        supports_system_role,
        training_template,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise TrainingError(
            f"the base model in {base_dir} has no chat template; use an instruct model"
        )
    specials = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
    system_ok = supports_system_role(template, special_tokens=specials)
    if opts.assistant_only_loss:
        try:
            tokenizer.chat_template = training_template(template, special_tokens=specials)
        except ChatTemplateError as exc:
            raise TrainingError(str(exc)) from exc
    return tokenizer, system_ok


def _common_system_prompt(dataset: Any) -> str | None:
    counts = Counter(
        m["content"] for msgs in dataset["train"]["messages"] for m in msgs if m["role"] == "system"
    )
    return counts.most_common(1)[0][0] if counts else None


def _sft_config(opts: TrainOptions, output_dir: Path, max_length: int) -> Any:
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=opts.epochs,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=opts.learning_rate(),
        lr_scheduler_type="cosine",
        warmup_steps=0,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        assistant_only_loss=opts.assistant_only_loss,
        max_length=max_length,
        seed=opts.seed,
        data_seed=opts.seed,
        bf16=_bf16_gpu(),
        use_cpu=not cuda,
        gradient_checkpointing=cuda,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_num_workers=0,
        save_only_model=True,
    )


def _lora_config(opts: TrainOptions) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        target_modules=TARGET_PRESETS[opts.targets],
        lora_dropout=opts.lora_dropout,
        task_type="CAUSAL_LM",
    )


def _metrics(trainer: Any, before: float, train_output: Any, opts: TrainOptions) -> dict[str, Any]:
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h and "eval_loss" not in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    best = min(eval_losses) if eval_losses else None
    epochs_run = len(eval_losses)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    return {
        "eval_loss_before": before,
        "eval_loss_per_epoch": eval_losses,
        "train_loss_per_epoch": train_losses,
        "best_eval_loss": best,
        "best_epoch": eval_losses.index(best) + 1 if best is not None else None,
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < opts.epochs,
        "train_loss": train_output.training_loss,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "global_steps": trainer.state.global_step,
        "trainable_params": int(trainable),
        "total_params": int(total),
    }


def _epoch_logger(log: Callable[[str], None]) -> Any:
    """A callback that reports each epoch's losses through `log` (instead of printing dicts)."""
    from transformers import TrainerCallback

    class EpochLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            epoch = f"epoch {logs.get('epoch', 0):.0f}"
            if "eval_loss" in logs:
                log(f"{epoch}: validation loss {logs['eval_loss']:.4f}")
            elif "loss" in logs:
                log(f"{epoch}: training loss {logs['loss']:.4f}")

    return EpochLog()


def _fit(
    opts: TrainOptions,
    base_dir: Path,
    dataset: Any,
    tokenizer: Any,
    qlora: bool,
    log: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed
    from trl import SFTTrainer

    set_seed(opts.seed)
    model = load_model(base_dir, qlora=qlora)
    limit = getattr(model.config, "max_position_embeddings", None) or opts.max_length
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(opts, opts.out / "checkpoints", min(opts.max_length, limit)),
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        processing_class=tokenizer,
        peft_config=_lora_config(opts),
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=opts.patience),
            _epoch_logger(log),
        ],
    )
    trainer.remove_callback(PrinterCallback)
    before = trainer.evaluate()["eval_loss"]
    output = trainer.train()
    metrics = _metrics(trainer, before, output, opts)
    metrics["quantized_4bit_layers"] = _count_4bit_layers(trainer.model)
    return trainer, metrics


def _count_4bit_layers(model: Any) -> int:
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    return sum(isinstance(m, Linear4bit) for m in model.modules())


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Load the base in full precision, merge the adapter into it, save the result."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if _bf16_gpu() else torch.float32
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def train(opts: TrainOptions, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train an adapter as `opts` says and write it, its metrics and its lineage to `opts.out`."""
    require_train_extra()
    import torch

    if opts.epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    if opts.targets not in TARGET_PRESETS:
        raise TrainingError(f"--targets must be one of {', '.join(TARGET_PRESETS)}")
    if (opts.out / "adapter" / "adapter_model.safetensors").exists():
        raise TrainingError(f"{opts.out} already holds a trained adapter; choose another --out")
    dataset = load_conversations(opts.dataset, seed=opts.seed)
    log(f"dataset: {len(dataset['train'])} train, {len(dataset['validation'])} validation rows")
    system_prompt = _common_system_prompt(dataset)  # before any folding into user turns
    opts.out.mkdir(parents=True, exist_ok=True)
    if opts.tiny:
        from larrylab.training._tiny import build_tiny_base

        texts = (m["content"] for split in dataset.values() for c in split["messages"] for m in c)
        try:
            base_dir = build_tiny_base(texts, opts.out / "base", seed=opts.seed)
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
        base_name = str(base_dir.resolve())
    else:
        base_name = opts.base or DEFAULT_BASE
        if base_name.lower().endswith(".gguf"):
            base_name = str(Path(base_name).expanduser().resolve())
        base_dir = resolve_base(base_name, log=log)
    tokenizer, system_ok = _prepare_tokenizer(base_dir, opts)
    if not system_ok:
        from larrylab.training._chat_templates import fold_system_messages

        dataset = dataset.map(lambda row: {"messages": fold_system_messages(row["messages"])})
    qlora = torch.cuda.is_available() if opts.qlora is None else opts.qlora
    log(f"base {base_name}: {'QLoRA (4-bit NF4)' if qlora else 'LoRA'}, targets {opts.targets}")
    trainer, metrics = _fit(opts, base_dir, dataset, tokenizer, qlora, log)
    adapter_dir = opts.out / "adapter"
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; nobody needs it
    merged_dir = merge_adapter(base_dir, adapter_dir, opts.out / "merged") if opts.merge else None
    shutil.rmtree(opts.out / "checkpoints", ignore_errors=True)
    _write_json(opts.out / METRICS_FILE, metrics)
    run = _run_record(opts, base_name, base_dir, tokenizer, dataset, qlora, adapter_dir, merged_dir)
    run["system_prompt"] = system_prompt
    _write_json(opts.out / RUN_FILE, run)
    return TrainResult(opts.out, adapter_dir, merged_dir, metrics, run)


def _run_record(
    opts: TrainOptions,
    base_name: str,
    base_dir: Path,
    tokenizer: Any,
    dataset: Any,
    qlora: bool,
    adapter_dir: Path,
    merged_dir: Path | None,
) -> dict[str, Any]:
    from larrylab.training._chat_templates import detect_family

    return {
        "base_model": base_name,
        "base_dir": str(base_dir.resolve()),
        "tiny": opts.tiny,
        "chat_family": detect_family(tokenizer.chat_template),
        "adapter_dir": str(adapter_dir.resolve()),
        "merged_dir": str(merged_dir.resolve()) if merged_dir else None,
        "dataset": {
            "path": str(opts.dataset.resolve()),
            **dataset_hash(opts.dataset),
            "train_rows": len(dataset["train"]),
            "validation_rows": len(dataset["validation"]),
        },
        "settings": {
            **{k: v for k, v in asdict(opts).items() if k not in ("dataset", "out", "base", "lr")},
            "qlora": qlora,
            "learning_rate": opts.learning_rate(),
        },
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(),
    }
