"""Tenstorrent backend: PyTorch -> Tenstorrent's torch-xla -> PJRT plugin ``pjrt-plugin-tt``.

Written against tt-xla's public API. One trial follows tt-xla's
``examples/pytorch/mnist_performant.py`` step by step. The calls are written once, as the
steps of ``tt_recipe.py``: this backend runs them (``initialize``: ``SELECT_DEVICE``,
``set_device_type("TT")``; ``prepare``: ``PREPARE``, from ``model.eval()`` to
``model.to(device)``; ``host_input``: ``CAST_INPUT``, the bf16 input made once outside the
timed loop; ``to_device``: ``TO_DEVICE``) and the exported script prints them. Around them,
``trial_env`` puts ``TT_RUNTIME_TRACE_REGION_SIZE`` into the trial process's environment at spawn
(the runtime reads it once, when torch_xla is imported; too late afterwards), and
``synchronize`` is ``xm.wait_device_ops()``, at block ends.

Compile options: every value is a string. tt-xla's plugin receives a ``map<string, string>``
(torch_xla stringifies what it is given) and parses ``optimization_level`` with ``std::stoi``
(pjrt_implementation/src/api/compile_options.cc), so ``2`` and ``"2"`` arrive identically;
booleans must be ``"true"``/``"false"``. Sending strings makes ``compile_options`` the exact
map the compiler sees, as in mnist_performant.py (``"optimization_level": "2"``).

Not searched here: conv weights. tt-xla's compiler ignores weight-dtype overrides on
convolutions, so only linear (matmul) weights get a dtype dimension. Activations are bf16
only (the card's native activation format; the reference recipe casts the whole model to bf16).

Device runtimes report failures to Python as a generic ``RuntimeError: Error code: 13``; the
reason is printed to stderr, which ``failure_patterns`` classifies (tt-metal's and tt-xla's
own messages). A trace-region failure can be retried once with a larger region, see
``with_larger_trace_region``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autotune.backends import tt_options, tt_recipe
from autotune.backends.base import Backend, Knob
from autotune.backends.tt_options import (
    DEFAULT_TRACE_REGION_SIZE,
    TRACE_REGION,
    TRACE_REGION_KNOB,
)
from autotune.wire import Status, TrialConfig, TrialResult

if TYPE_CHECKING:
    import torch

TRACE_REGION_ENV = "TT_RUNTIME_TRACE_REGION_SIZE"
#: The sizes the space offers (tt_options.TRACE_REGION): a trial with one of them may be
#: retried once with a larger region; a size set by hand or by the retry is not.
SEARCHED_TRACE_REGIONS = TRACE_REGION.choices
#: How much a retry enlarges the region at least (more when the runtime said it needs more).
TRACE_RETRY_FACTOR = 4
_MIB = 1 << 20

# What tt-metal prints when the trace does not fit: the size it needed, and what it had.
_TRACE_NEEDED = re.compile(
    r"Creating trace buffers of size (\d+)B on (?:MeshDevice|device) \d+, "
    r"but only (\d+)B is allocated for trace region"
)


class TTBackend(Backend):
    name = "tt"
    weight_dtypes = ("bf16", "bfp_bf8", "bfp_bf4")
    # Linear (matmul) weights only: tt-xla's compiler ignores conv weight overrides.
    weight_kinds = frozenset({"linear"})
    activation_dtypes = ("bf16",)
    has_trace = True
    knobs = (
        Knob(
            "experimental_weight_dtype",
            ("none", "bfp_bf8", "bfp_bf4"),
            "tt-xla's compiler-wide weight dtype (compile option experimental_weight_dtype, "
            "sent only when not 'none'); the per-layer map is applied as well",
        ),
        *tt_options.COMPILE_KNOBS,
        TRACE_REGION,
    )
    # tt-metal's runtime opens only the PCIe devices listed here: with --devices each trial process
    # gets its own chip (a chip is opened by one process at a time).
    visible_devices_env = "TT_METAL_VISIBLE_DEVICES"
    trial_modules = ("torch", "torch_xla", "tt_torch")
    install_hint = (
        "install pjrt-plugin-tt from Tenstorrent's wheel index (see tt-xla's getting-started "
        "docs) in a Python 3.12 environment, and pass that interpreter as --trial-python"
    )
    failure_patterns = (
        # tt-metal's allocator (bank_manager.cpp); the regex is tt-xla's own classifier's.
        (
            Status.OOM,
            re.compile(
                r"Out of Memory: Not enough space to allocate .* B (?:L1|L1_SMALL|DRAM) "
                r"buffer across .* banks"
            ),
        ),
        # tt-metal's program.cpp: the circular buffers of a kernel do not fit in L1, or run
        # into L1 buffers already allocated; both grow with the batch, like an OOM.
        (Status.OOM, re.compile(r"Statically allocated circular buffers .* beyond max L1 size")),
        (Status.OOM, re.compile(r"Statically allocated circular buffers .* clash with L1 buffers")),
        (Status.TRACE_ERROR, _TRACE_NEEDED),
        # tt-xla's module_builder.cc and MLIR diagnostics ("loc(...): error: ...").
        (Status.COMPILE_ERROR, re.compile(r"Failed to run TTIRToTTNN\w* pipeline")),
        (Status.COMPILE_ERROR, re.compile(r"Failed to convert from SHLO to TTIR module")),
        (Status.COMPILE_ERROR, re.compile(r"Failed to generate flatbuffer binary")),
        (
            Status.COMPILE_ERROR,
            re.compile(r"(?m)^\s*(?:loc\(.*\)|<unknown>(?::\d+)?|[^\s:]+:\d+(?::\d+)?): error: "),
        ),
    )

    def __init__(self) -> None:
        self._device: Any = None

    # --- tuner side (no torch, no torch_xla) ------------------------------------------------

    def compile_options(self, config: TrialConfig) -> dict[str, Any]:
        """The exact map given to ``torch_xla.set_custom_compile_options`` (all strings)."""
        return {
            "optimization_level": str(config.optimization_level),
            "enable_trace": "true" if config.trace else "false",
            **tt_options.compile_options(config.knob_map),
        }

    def trial_env(self, config: TrialConfig) -> dict[str, str]:
        """``TT_RUNTIME_TRACE_REGION_SIZE`` when trace is on (read when torch_xla loads)."""
        if not config.trace:
            return {}
        return {TRACE_REGION_ENV: str(self.trace_region_size(config))}

    @staticmethod
    def trace_region_size(config: TrialConfig) -> int:
        size = config.knob_map.get(TRACE_REGION_KNOB, DEFAULT_TRACE_REGION_SIZE)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(
                f"{TRACE_REGION_KNOB} must be a non-negative integer (0: allocated as needed), "
                f"not {size!r}"
            )
        return size

    def with_larger_trace_region(self, config: TrialConfig, stderr: str = "") -> TrialConfig | None:
        """The config to retry a TRACE_ERROR trial with once, or None.

        The retry carries the config extra ``trace_region_size``: the current size (the
        default one for 0, "as needed", which a runtime before tt-mlir #7426 takes as no
        region) times ``TRACE_RETRY_FACTOR``, or, when `stderr` holds tt-metal's message with
        the size the trace needed, that size plus a quarter rounded up to a MiB if larger.
        None when trace is off or the size is not one the space offers (it was retried, or
        chosen by hand): the tuner then fails the trial with reason ``trace_region``.
        """
        size = self.trace_region_size(config) if config.trace else None
        if size not in SEARCHED_TRACE_REGIONS:
            return None
        size = TRACE_RETRY_FACTOR * (size or DEFAULT_TRACE_REGION_SIZE)
        needed = [int(m.group(1)) for m in _TRACE_NEEDED.finditer(stderr)]
        if needed:
            size = max(size, math.ceil(max(needed) * 1.25 / _MIB) * _MIB)
        knobs = {**config.knob_map, TRACE_REGION_KNOB: size}
        return replace(config, knobs=tuple(knobs.items()))

    def retry_config(self, config: TrialConfig, result: TrialResult) -> TrialConfig | None:
        if result.status is Status.TRACE_ERROR:
            return self.with_larger_trace_region(config, result.stderr_tail)
        return None

    # --- trial-process side --------------------------------------------------------------

    def initialize(self, config: TrialConfig) -> None:
        if config.trace and TRACE_REGION_ENV not in os.environ:
            warnings.warn(
                f"trace is on but {TRACE_REGION_ENV} was not set before torch_xla was imported; "
                "the runtime reserves no trace region and the trace capture will fail",
                stacklevel=2,
            )
        tt_recipe.SELECT_DEVICE(tt_recipe.names("xr"))

    def prepare(self, model: torch.nn.Module, config: TrialConfig) -> Callable[..., Any]:
        # Importing tt_torch also registers the "tt" torch.compile backend.
        names = tt_recipe.names(
            "torch",
            "torch_xla",
            "xm",
            "tt_torch",
            model=model,
            WEIGHT_DTYPE_OVERRIDES=config.weight_dtype_map,
            COMPILE_OPTIONS=self.compile_options(config),
        )
        if config.activation_dtype not in self.activation_dtypes:
            raise ValueError(f"tt backend runs bf16 activations, not {config.activation_dtype}")
        for step in tt_recipe.PREPARE:
            step(names)
        self._device = names.device
        return names.model

    def host_input(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        if not x.is_floating_point():  # token ids, masks: as they are
            return x
        return tt_recipe.CAST_INPUT(tt_recipe.names("torch", inputs=x))

    def to_device(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        import torch

        if x.is_floating_point() and x.dtype != torch.bfloat16:
            # a batch not made by host_input (eval set): cast it
            x = x.to(torch.bfloat16)
        return tt_recipe.TO_DEVICE(tt_recipe.names(inputs=x, device=self._device))

    def synchronize(self) -> None:
        import torch_xla.core.xla_model as xm

        xm.wait_device_ops()

    def device_name(self) -> str:
        """``xm.xla_device_hw`` (e.g. "TT") and the runtime's ``device_arch`` attribute."""
        parts = []
        if self._device is not None:  # never open the device just to name it
            try:
                import torch_xla.core.xla_model as xm

                parts.append(str(xm.xla_device_hw(self._device)))
            except Exception:  # naming must never fail a trial
                pass
            try:
                import torch_xla.runtime as xr

                attrs = xr.global_runtime_device_attributes()
                if attrs and attrs[0].get("device_arch"):
                    parts.append(str(attrs[0]["device_arch"]))
            except Exception:
                pass
        return " ".join(parts) or "Tenstorrent device (name unavailable)"

    def versions(self) -> dict[str, str]:
        import importlib.metadata

        import torch

        found = {"torch": torch.__version__}
        try:
            import torch_xla

            found["torch_xla"] = str(getattr(torch_xla, "__version__", "unknown"))
        except ImportError:
            pass
        for dist in ("pjrt-plugin-tt",):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                found[dist] = importlib.metadata.version(dist)
        return found
