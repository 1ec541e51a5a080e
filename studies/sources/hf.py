"""``--model hf:<local dir or hub id>``: a Hugging Face transformers model, through its Auto
classes (``pip install -e '.[hf]'``).

- The task comes from the config's ``architectures``: ``...ForSequenceClassification`` and
  ``...ForImageClassification`` load with their head and score their ``logits``; anything
  else loads as the base model (``AutoModel``), scored by fidelity against fp32 (PCC of its
  first output, ``last_hidden_state``).
- Inputs: ``--eval-data FILE`` (a ``torch.save`` of ``(inputs, labels)`` or of the inputs
  alone; without labels the metric is fidelity against fp32). Without a file, text models get
  ``--seq-len`` tokens per row: text made of the tokenizer's own vocabulary and tokenized by
  it when the model has a tokenizer, else random token ids and an attention mask; image
  models get random ``pixel_values`` of the config's image size. Token ids and masks are
  never cast to the activation dtype (`autotune.pytree.cast_floating`).
- The dtype map is grouped by layer role (``*.attention.self.query.weight``, ...,
  ``*.intermediate.dense.weight``): one dimension per role, embeddings excluded.

A hub id needs the network or a local Hugging Face cache; a directory written by
``save_pretrained`` needs neither.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import defaults
from autotune.errors import UsageError
from studies import PCC, Study
from studies.metrics import Metric
from studies.sources.data import load_eval_data

if TYPE_CHECKING:
    import torch

SEQUENCE, IMAGE, BASE = "sequence classification", "image classification", "base model"
EVAL_ROWS = 256  # synthetic eval rows (no --eval-data)


def make_study(spec: str, prefix: str, target: str, options: dict[str, Any]) -> Study:
    return HFStudy(spec, target, options)


class HFStudy(Study):
    group_by_role = True
    max_batch_size = 512

    def __init__(self, spec: str, target: str, options: dict[str, Any]) -> None:
        self.name = spec
        self.target = target
        self.seq_len: int | None = options.get("seq_len")
        self.eval_file: str | None = options.get("eval_data")
        if target.startswith((".", "/", "~")) and not Path(target).expanduser().is_dir():
            raise UsageError(f"model {spec!r}: no directory {target} (a save_pretrained one)")
        if self.seq_len is not None and self.seq_len < 1:
            raise UsageError(f"--seq-len must be at least 1, not {self.seq_len}")
        self._data: tuple[Any, Any] | None = None

    @cached_property
    def config(self) -> Any:
        try:
            from transformers import AutoConfig
        except ImportError:
            raise UsageError(
                f"model {self.name!r} needs transformers: pip install -e '.[hf]'"
            ) from None
        try:
            return AutoConfig.from_pretrained(self.target)
        except Exception as exc:  # OSError (no such dir, offline hub), ValueError (bad config)
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UsageError(
                f"cannot load the Hugging Face config of {self.target!r}: {first} (a hub id "
                "needs the network or a local cache; a save_pretrained directory works offline)"
            ) from None

    @property
    def task(self) -> str:
        archs = self.config.architectures or []
        if any(a.endswith("ForSequenceClassification") for a in archs):
            return SEQUENCE
        if any(a.endswith("ForImageClassification") for a in archs):
            return IMAGE
        return BASE

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"Hugging Face {self.config.model_type} ({self.task}) from {self.target}"

    @property
    def metric(self) -> Metric | None:  # type: ignore[override]
        # A base model has no labels to be scored against: its output is compared with fp32.
        return PCC if self.task == BASE else None

    def notes(self) -> list[str]:
        if self.task == BASE:
            return [
                f"{self.target}: a base model (no task head in its config's architectures): "
                "the metric is fidelity against fp32 (PCC of last_hidden_state)"
            ]
        return []

    def build_model(self) -> torch.nn.Module:
        import transformers

        transformers.logging.set_verbosity_error()  # no per-process load reports in trials
        transformers.logging.disable_progress_bar()
        cls = {
            SEQUENCE: transformers.AutoModelForSequenceClassification,
            IMAGE: transformers.AutoModelForImageClassification,
            BASE: transformers.AutoModel,
        }[self.task]
        try:
            model = cls.from_pretrained(self.target)
        except OSError as exc:
            raise ValueError(f"cannot load {self.target!r}: {exc}") from None
        return model.float().eval()

    def eval_data(self) -> tuple[Any, torch.Tensor | None]:
        if self._data is None:
            if self.eval_file is not None:
                self._data = load_eval_data(self.eval_file)
            elif self.task == IMAGE:
                self._data = (self._pixels(), None)
            else:
                self._data = (self._tokens(), None)
        return self._data

    def _length(self) -> int:
        top = getattr(self.config, "max_position_embeddings", None) or defaults.SEQ_LEN
        return self.seq_len or min(defaults.SEQ_LEN, top)

    def _pixels(self) -> dict[str, torch.Tensor]:
        import torch

        size = getattr(self.config, "image_size", 224)
        size = tuple(size) if isinstance(size, list | tuple) else (size, size)
        channels = getattr(self.config, "num_channels", 3)
        gen = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn((EVAL_ROWS, channels, *size), generator=gen)}

    def _tokens(self) -> dict[str, torch.Tensor]:
        """`EVAL_ROWS` rows of `_length()` tokens, the same in every process: real rows of
        varied length (a quarter to all of it), padded, with their attention mask."""
        import torch

        n = self._length()
        gen = torch.Generator().manual_seed(0)
        lengths = torch.randint(max(1, n // 4), n + 1, (EVAL_ROWS,), generator=gen)
        tokenizer = self._tokenizer()
        vocab = self.config.vocab_size
        ordinary = []
        if tokenizer is not None:
            special = set(tokenizer.all_special_ids)
            ordinary = [i for i in range(min(vocab, len(tokenizer))) if i not in special]
        if not ordinary:  # no tokenizer, or one with no vocabulary (transformers 5 makes those)
            pad = self.config.pad_token_id or 0
            ids = torch.randint(1, vocab, (EVAL_ROWS, n), generator=gen)
            mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
            return {"input_ids": ids * mask + pad * (1 - mask), "attention_mask": mask}
        pool = torch.tensor(ordinary)
        texts = [
            tokenizer.decode(pool[torch.randint(0, len(pool), (int(k),), generator=gen)])
            for k in lengths
        ]
        encoded = tokenizer(
            texts, padding="max_length", truncation=True, max_length=n, return_tensors="pt"
        )
        return {k: v for k, v in encoded.items() if k in tokenizer.model_input_names}

    def _tokenizer(self) -> Any:
        """The model's tokenizer, or None when it has none."""
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.target)
        except Exception:  # no tokenizer files: OSError, ValueError, KeyError by version
            return None
