"""Training: LoRA/QLoRA fine-tunes of a base model on a pipeline dataset, chat templates, the
tiny offline base, and packaging for Ollama."""

from larrylab.training._gguf import KNOWN_GGUF_BASES
from larrylab.training._package import (
    PackagingError,
    create_command,
    create_on_ollama,
    modelfile_text,
    package_hint,
    plan_package,
    serving_info,
)
from larrylab.training._train import (
    RUN_FILE,
    TrainingError,
    TrainOptions,
    TrainResult,
    require_train_extra,
    resolve_base,
    train,
)

__all__ = [
    "KNOWN_GGUF_BASES",
    "RUN_FILE",
    "PackagingError",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "create_command",
    "create_on_ollama",
    "modelfile_text",
    "package_hint",
    "plan_package",
    "require_train_extra",
    "resolve_base",
    "serving_info",
    "train",
]
