"""A tiny Llama "base model" built from the dataset itself, so training runs offline in seconds.

The tokenizer is a byte-level BPE trained by `tokenizers` on the dataset's text; the model is
a randomly initialised `LlamaForCausalLM` from a small `LlamaConfig`. Both are saved as an
ordinary Hugging Face model folder, so the adapter trained on top of it, the merged model and
the Ollama Modelfile (`FROM` that folder) have a real lineage. It is for tests and demos:
it learns the format, not the coaching.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larrylab.training._chat_templates import TINY_CHAT_TEMPLATE

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, IM_START, IM_END)


@dataclass(frozen=True)
class TinySize:
    """The shape of the tiny model."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    bos: str = BOS_TOKEN,
    eos: str = IM_END,
    pad: str = PAD_TOKEN,
    chat_template: str = TINY_CHAT_TEMPLATE,
) -> Any:
    """A byte-level BPE tokenizer trained on `texts` (ChatML chat template by default)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=pad, bos_token=bos, eos_token=eos
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_base(
    texts: Iterable[str],
    out_dir: Path,
    *,
    seed: int,
    size: TinySize | None = None,
    tokenizer: Any = None,
) -> Path:
    """Build a tiny Llama (and, unless given, a tokenizer trained on `texts`); save both in
    `out_dir` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    size = size or TinySize()
    text_list = [t for t in texts if t]
    if not text_list:
        raise ValueError("the dataset has no text to build the tiny model's tokenizer from")
    if tokenizer is None:
        tokenizer = train_tokenizer(text_list, vocab_size=size.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=size.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
