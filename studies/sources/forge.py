"""``--model <package.module>:<ForgeModel subclass>[@variant]``: a loader of Tenstorrent's
model zoo, tenstorrent/tt-forge-models (not on PyPI: put a checkout on ``PYTHONPATH``).

What is used of a loader, as its ``base.py`` documents the interface:

- ``Loader(variant=...)``, the variant named after ``@`` (one of ``_VARIANTS``' keys, by
  name or value; without one, the loader's ``DEFAULT_VARIANT``);
- ``load_model(dtype_override=torch.float32)`` (the study's fp32 model; the keyword only
  where the signature has it) and ``load_inputs(dtype_override=..., batch_size=N)``: its
  signature is read, and where it takes no ``batch_size`` its batch (usually of 1) is tiled
  to N rows;
- ``unpack_forward_output(output)``, where present: the tensor scored (it must keep dim 0
  the batch);
- ``decode_output(...)``, where present: what the fp32 model predicts, said once when the
  study starts;
- ``get_weight_dtype_config_path()``: where ``autotune export --format tt-mixed-precision
  --loader SPEC`` writes the map (`mixed_precision_path`), the file tt-xla's test runner
  applies before compile.

There is no label in a loader's inputs: the metric is fidelity against fp32 (PCC), unless
``--eval-data FILE`` gives labelled inputs.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import pytree
from autotune.errors import UsageError
from studies import Study
from studies.sources.data import load_eval_data

if TYPE_CHECKING:
    import torch

EVAL_ROWS = 16  # rows of the loader's inputs in the eval set
DECODED_CHARS = 160  # of decode_output's text, said at the start


def is_loader(obj: Any) -> bool:
    """A ForgeModel-shaped class: load_model and load_inputs, and not a Study."""
    return (
        isinstance(obj, type)
        and not issubclass(obj, Study)
        and callable(getattr(obj, "load_model", None))
        and callable(getattr(obj, "load_inputs", None))
    )


class Unpack:
    """The loader's ``unpack_forward_output`` as `Study.output`; its text is stable across
    processes (it is part of the fp32 reference's fingerprint)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, out: Any) -> Any:
        return self.fn(out)

    def __repr__(self) -> str:
        return "unpack_forward_output"


class ForgeStudy(Study):
    max_batch_size = 256

    def __init__(self, spec: str, cls: type, variant: str | None, options: dict[str, Any]):
        self.name = spec
        self.cls = cls
        self.variant = variant
        self.eval_file: str | None = options.get("eval_data")
        self.description = f"tt-forge-models loader {cls.__qualname__}" + (
            f" ({variant})" if variant else ""
        )
        self._variant_key = _variant_key(spec, cls, variant)  # bad variant: said at once
        self._loader: Any = None
        self._data: tuple[Any, Any] | None = None

    @property
    def loader(self) -> Any:
        if self._loader is None:
            self._loader = (
                self.cls(variant=self._variant_key) if self._variant_key is not None else self.cls()
            )
        return self._loader

    @property
    def output(self) -> Any:  # type: ignore[override]
        unpack = getattr(self.loader, "unpack_forward_output", None)
        return Unpack(unpack) if callable(unpack) else None

    def build_model(self) -> torch.nn.Module:
        model = _call(self.loader.load_model)
        if not _is_module(model):
            raise TypeError(f"load_model() returned a {type(model).__name__}, not an nn.Module")
        return model.float().eval()

    def eval_data(self) -> tuple[Any, torch.Tensor | None]:
        if self._data is None:
            if self.eval_file is not None:
                self._data = load_eval_data(self.eval_file)
            else:
                self._data = (self.inputs(EVAL_ROWS), None)
        return self._data

    def inputs(self, rows: int) -> Any:
        """`rows` rows of the loader's inputs: asked for where load_inputs takes a
        batch_size, else its own batch tiled."""
        takes_batch = "batch_size" in inspect.signature(self.loader.load_inputs).parameters
        made = _call(self.loader.load_inputs, **({"batch_size": rows} if takes_batch else {}))
        made = pytree.tree_map(lambda t: t, made)  # a BatchEncoding or other Mapping: a dict
        return made if takes_batch else pytree.cycle_rows(made, rows)

    def decode(self, out: Any) -> str | None:
        """What decode_output makes of the fp32 output, in one line, or None without one."""
        decode = getattr(self.loader, "decode_output", None)
        if not callable(decode) or getattr(decode, "__isabstractmethod__", False):
            return None
        params = [
            p
            for p in inspect.signature(decode).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):  # many loaders print their decoding
                value = decode(out) if params else decode(outputs=out)
        except Exception as exc:  # a decoder is a display aid: its failure stops nothing
            return f"decode_output failed: {type(exc).__name__}: {exc}"
        text = value if isinstance(value, str) else printed.getvalue() or repr(value)
        text = " ".join(str(text).split())
        return text[:DECODED_CHARS] + ("..." if len(text) > DECODED_CHARS else "")


def _variant_key(spec: str, cls: type, variant: str | None) -> Any:
    variants = dict(getattr(cls, "_VARIANTS", None) or {})
    if variant is None:
        return None
    for key in variants:
        if variant in (str(key), getattr(key, "value", None), getattr(key, "name", None)):
            return key
    known = ", ".join(str(getattr(k, "value", k)) for k in variants) or "none"
    raise UsageError(
        f"model {spec!r}: {cls.__qualname__} has no variant {variant!r} (variants: {known})"
    )


def _call(fn: Any, **kwargs: Any) -> Any:
    """`fn` with dtype_override=float32 where it takes it (the study is fp32)."""
    import torch

    if "dtype_override" in inspect.signature(fn).parameters:
        kwargs["dtype_override"] = torch.float32
    return fn(**kwargs)


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def mixed_precision_path(spec: str) -> Path:
    """Where the loader of `spec` keeps its mixed-precision map
    (``get_weight_dtype_config_path()``); bad input when it names none."""
    from studies import get_study

    study = get_study(spec)
    if not isinstance(study, ForgeStudy):
        raise UsageError(f"--loader {spec!r} is not a tt-forge-models loader (ForgeModel subclass)")
    where = getattr(study.loader, "get_weight_dtype_config_path", None)
    path = where() if callable(where) else None
    if not path:
        raise UsageError(
            f"--loader {spec!r}: {study.cls.__qualname__}.get_weight_dtype_config_path() names "
            "no file; write the map with -o instead"
        )
    return Path(path)
