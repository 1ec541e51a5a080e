"""Files a user gives a source: the eval set (``--eval-data``) and weights (``--weights``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def load_eval_data(path: str) -> tuple[Any, torch.Tensor | None]:
    """``(inputs, labels)`` from a ``torch.save`` file holding a pair ``(inputs, labels)``
    (labels may be None), a dict with ``inputs`` (and ``labels``), or the inputs alone as a
    tensor or a dict of tensors (dim 0 the batch). Inputs that are a tuple of tensors go in
    a pair or a dict, so that a pair is never read as two inputs. ``weights_only=True``."""
    import torch

    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(data, Mapping) and "inputs" in data:
        return data["inputs"], data.get("labels")
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise ValueError(
                f"{path} holds {len(data)} items: give (inputs, labels) or a dict of inputs"
            )
        return data[0], data[1]
    return data, None


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``torch.save`` file (``weights_only=True``), or a safetensors
    file; a checkpoint dict holding it under ``state_dict`` or ``model`` is unwrapped."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a state dict")
    return dict(data)
