"""Batches and outputs as users hold them: a tensor, a tuple or list, or a dict of tensors
(nested), with dim 0 the batch in every tensor.

Inputs are fed to the model as ``model(x)``, ``model(*x)`` or ``model(**x)``; outputs may
also be a Hugging Face ``ModelOutput`` (a Mapping). Plain Python and lazy torch imports, so
the tuner side can describe a batch without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The output a study scores when it names none: the Hugging Face convention first.
DEFAULT_OUTPUT_KEY = "logits"


class BatchError(ValueError):
    """A batch or an output that does not have the shape the study contract asks for."""


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def tree_map(fn: Callable[[Any], Any], x: Any) -> Any:
    """`x` with `fn` applied to every tensor in it (other leaves kept as they are)."""
    if isinstance(x, Mapping):
        return {k: tree_map(fn, v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return type(x)(*(tree_map(fn, v) for v in x))
    if isinstance(x, tuple | list):
        return type(x)(tree_map(fn, v) for v in x)
    return fn(x) if _is_tensor(x) else x


def leaves(x: Any) -> list[torch.Tensor]:
    """Every tensor in `x`, in order (dict order, then position)."""
    found: list[Any] = []
    tree_map(found.append, x)
    return found


def paths(x: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in `x`: ``input_ids``, ``[1]``, ``image.rgb`` ...
    (a lone tensor's path is `prefix`)."""
    if isinstance(x, Mapping):
        return [p for k, v in x.items() for p in paths(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(x, tuple | list):
        return [p for i, v in enumerate(x) for p in paths(v, f"{prefix}[{i}]")]
    return [(prefix, x)] if _is_tensor(x) else []


def describe(x: Any, name: str = "tensor") -> str:
    """A short text for messages: ``input_ids: int64[2, 16], attention_mask: bool[2, 16]``
    (a lone tensor is called `name`)."""
    items = [(p or name, t) for p, t in paths(x)]
    if not items:
        return f"no tensor ({type(x).__name__})"
    return ", ".join(f"{p}: {str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for p, t in items)


def rows(x: Any) -> int:
    """The batch size of `x`: dim 0, which every tensor in it must share."""
    items = paths(x)
    if not items:
        raise BatchError(f"a batch must hold at least one tensor, not {type(x).__name__}")
    sizes = {p: (t.shape[0] if t.dim() else None) for p, t in items}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        shown = ", ".join(f"{p}: {n}" for p, n in sizes.items())
        raise BatchError(f"every tensor of a batch needs the same dim 0 (the batch): {shown}")
    return next(iter(sizes.values()))


def take(x: Any, start: int, stop: int) -> Any:
    """Rows `start:stop` of every tensor."""
    return tree_map(lambda t: t[start:stop], x)


def pad_rows(x: Any, n: int) -> Any:
    """`x` with zero rows appended up to `n` rows (token id 0 and mask 0 are valid values)."""
    import torch

    missing = n - rows(x)
    if missing <= 0:
        return x
    return tree_map(lambda t: torch.cat([t, t.new_zeros((missing, *t.shape[1:]))]), x)


def cycle_rows(x: Any, n: int) -> Any:
    """`n` rows of `x`, repeating its rows from the start when it has fewer."""
    import torch

    have = rows(x)
    index = torch.arange(n) % have
    return tree_map(lambda t: t[index], x)


def split(x: Any, size: int) -> list[Any]:
    """`x` in consecutive batches of `size` rows (the last may be shorter)."""
    n = rows(x)
    return [take(x, i, min(i + size, n)) for i in range(0, n, size)]


def cast_floating(x: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors to `dtype`; integer and bool tensors (token ids, masks,
    categories) are never cast."""
    return tree_map(lambda t: t.to(dtype) if t.is_floating_point() else t, x)


def call(model: Callable[..., Any], x: Any) -> Any:
    """The model on batch `x`: ``model(**x)`` for a dict, ``model(*x)`` for a tuple or
    list, ``model(x)`` for a tensor."""
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple | list):
        return model(*x)
    return model(x)


def select_output(out: Any, which: str | int | Callable[[Any], Any] | None = None) -> torch.Tensor:
    """The output tensor a study scores: `which` (a key, an index, or a function of the
    output), else ``logits`` where the output has it, else its first floating-point tensor."""
    if callable(which):
        picked = which(out)
        if not _is_tensor(picked):
            raise BatchError(f"{which!r} returned a {type(picked).__name__}, not a tensor")
        return picked
    if which is not None:
        try:
            picked = out[which]
        except (KeyError, IndexError, TypeError):
            keys = _keys(out)
            raise BatchError(
                f"the model's output has no {which!r}" + (f"; it has {keys}" if keys else "")
            ) from None
        if not _is_tensor(picked):
            raise BatchError(f"output {which!r} is a {type(picked).__name__}, not a tensor")
        return picked
    if _is_tensor(out):
        return out
    if isinstance(out, Mapping) and _is_tensor(out.get(DEFAULT_OUTPUT_KEY)):
        return out[DEFAULT_OUTPUT_KEY]
    for _, t in paths(out):
        if t.is_floating_point():
            return t
    raise BatchError(
        f"the model's output ({type(out).__name__}: {describe(out)}) has no floating-point "
        "tensor to score; name one with Study.output"
    )


def _keys(out: Any) -> str:
    if isinstance(out, Mapping):
        return ", ".join(map(str, out))
    if isinstance(out, tuple | list):
        return f"{len(out)} items (indices 0..{len(out) - 1})"
    return ""
