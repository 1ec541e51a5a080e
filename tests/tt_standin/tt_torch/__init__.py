"""STAND-IN for tt-xla's ``tt_torch`` package. Not tt-xla; no Tenstorrent card here.

We have neither a Tenstorrent card nor its software stack. This package imitates what
autotune's ``tt`` backend uses from tt_torch, runs on the CPU, and records each call (see
``torch_xla/_standin.py``) so tests can check which calls the backend makes:

- importing it registers the ``"tt"`` torch.compile backend (as ``import tt_torch`` does in
  tt-xla). Here the backend records the graph it receives (the compile options in force, the
  weight-dtype overrides inside it) and runs the graph module eagerly on the CPU; each
  execution may raise an injected failure (``TT_STANDIN_FAIL``).
- ``apply_weight_dtype_overrides`` follows tt-xla's ``tt_torch/weight_dtype.py``: the config
  is a dict, a JSON path or a dtype string; keys are ``fnmatch`` globs over
  ``named_parameters()`` names; ``"default"`` covers every ``*.weight`` and explicit patterns
  overwrite it, later patterns overwriting earlier ones; unmatched patterns warn; each
  matched parameter gets a parametrization calling ``torch.ops.tt.weight_dtype_override``.
  Because a parametrized weight is renamed (``fc1.parametrizations.weight.original``), a
  second call cannot match it again: the first override applied to a weight wins.
- ``torch.ops.tt.weight_dtype_override`` emulates the values the card holds: bfp_bf8 and
  bfp_bf4 through ``autotune.numerics.round_bfp`` when importable (bfp_bf8 with the device
  packer's rule, as the card converts bf16 weights to bfp8 with its own typecast; bfp_bf4 with
  the host rule, as those are packed on the host), else rounding to bf16 only.
  The global ``experimental_weight_dtype`` compile option is recorded, not emulated.
"""

from __future__ import annotations

import json
import os
import warnings
from fnmatch import fnmatch
from typing import Any

import torch
from torch.nn.utils import parametrize
from torch_xla import _standin

_standin.record("import tt_torch")

_DTYPE_STRINGS = ("bfp_bf4", "bfp_bf8", "bf16")

try:
    from autotune.numerics import round_bfp
except ImportError:  # outside an autotune checkout: bf16 only
    round_bfp = None

#: Which packer's rounding the card applies per format (see the module docstring).
BFP_RULES = {"bfp_bf8": "device", "bfp_bf4": "host"}
EMULATION = "autotune.numerics.round_bfp" if round_bfp is not None else "bf16 rounding only"

_cache: dict[tuple, torch.Tensor] = {}


def _card_values(weight: torch.Tensor, dtype_str: str) -> torch.Tensor:
    if dtype_str not in _DTYPE_STRINGS:
        raise ValueError(f"weight_dtype_override: unsupported dtype {dtype_str!r}")
    key = (weight.data_ptr(), weight._version, tuple(weight.shape), weight.dtype, dtype_str)
    if key not in _cache:  # weights do not change between inferences: convert once
        if dtype_str == "bf16" or round_bfp is None:
            value = weight.detach().to(torch.bfloat16).to(weight.dtype)
        else:
            value = round_bfp(weight.detach(), dtype_str, rule=BFP_RULES[dtype_str])
        _cache[key] = value
    return _cache[key].clone()


@torch.library.custom_op("tt::weight_dtype_override", mutates_args=())
def weight_dtype_override(weight: torch.Tensor, dtype_str: str) -> torch.Tensor:
    return _card_values(weight, dtype_str)


@weight_dtype_override.register_fake
def _(weight: torch.Tensor, dtype_str: str) -> torch.Tensor:
    return torch.empty_like(weight)


class WeightDtypeParametrization(torch.nn.Module):
    def __init__(self, dtype_str: str) -> None:
        super().__init__()
        self.dtype_str = dtype_str

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.ops.tt.weight_dtype_override(weight, self.dtype_str)


def _load_config(config: str | dict | os.PathLike) -> dict:
    if isinstance(config, dict):
        return dict(config)
    text = str(config)
    if text in _DTYPE_STRINGS:
        return {"default": text}
    if text.endswith(".json") or os.path.isfile(text):
        with open(text) as f:
            return json.load(f)
    raise ValueError(
        "config must be a dict, a JSON file path, or a dtype string "
        f"('bfp_bf4'/'bfp_bf8'/'bf16'), got: {config!r}"
    )


def apply_weight_dtype_overrides(
    model: torch.nn.Module, config: str | dict | os.PathLike
) -> list[tuple[str, str]]:
    overrides = _load_config(config)
    default_dtype = overrides.pop("default", None)
    modules = dict(model.named_modules())
    names = [name for name, _ in model.named_parameters()]

    resolved: dict[str, str] = {}
    if default_dtype is not None:
        for name in names:
            if name.endswith(".weight"):
                resolved[name] = default_dtype
    for pattern, dtype_str in overrides.items():
        matched = [name for name in names if fnmatch(name, pattern)]
        for name in matched:
            resolved[name] = dtype_str
        if not matched:
            warnings.warn(
                f"Weight dtype override pattern '{pattern}' did not match any model parameters.",
                stacklevel=2,
            )

    applied = []
    for path, dtype_str in resolved.items():
        module_path, param_name = path.rsplit(".", 1)
        module = modules.get(module_path)
        if module is None or not isinstance(getattr(module, param_name, None), torch.nn.Parameter):
            continue
        parametrize.register_parametrization(
            module, param_name, WeightDtypeParametrization(dtype_str)
        )
        applied.append((path, dtype_str))

    _standin.record(
        "tt_torch.apply_weight_dtype_overrides",
        config=config if isinstance(config, dict) else str(config),
        applied=applied,
        model_training=model.training,
        model_param_dtypes=sorted({str(p.dtype) for p in model.parameters()}),
        model_compiled=getattr(model, "_compiled_call_impl", None) is not None,
        emulation=EMULATION,
    )
    return applied


# --- the "tt" torch.compile backend ----------------------------------------------------------


def _override_ops(gm: torch.fx.GraphModule) -> list[str]:
    op = torch.ops.tt.weight_dtype_override
    targets = (op, op.default)  # dynamo records the packet, aot graphs the overload
    return sorted(str(n.args[1]) for n in gm.graph.nodes if n.target in targets)


@torch._dynamo.register_backend(name="tt")
def tt_backend(gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any):
    _standin.record(
        "tt backend compile",
        compile_options=_standin.state.compile_options,
        device_type=_standin.state.device_type,
        weight_dtype_overrides_in_graph=_override_ops(gm),
        kwargs=kwargs,
    )

    def run(*args: Any) -> Any:
        _standin.before_execution()
        if _standin.state.executions <= 2:
            dtypes = sorted({str(a.dtype) for a in args if isinstance(a, torch.Tensor)})
            _standin.record("tt execute", execution=_standin.state.executions, input_dtypes=dtypes)
        return gm.forward(*args)

    return run
