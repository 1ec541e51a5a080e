"""The Tenstorrent recipe, written once: the tt-xla calls of one trial, in order.

The order is tt-xla's ``examples/pytorch/mnist_performant.py``. Each `Step` holds one call
twice, side by side: ``source``, the line the exported script runs (``autotune export
--format script``, written by ``tt_export.py``), and ``run``, the same call as the ``tt``
backend makes it in the trial process (``tt.py``). Both use the script's names: the modules
of `MODULES`, ``model``, ``device``, ``inputs``, and the config's ``WEIGHT_DTYPE_OVERRIDES``
and ``COMPILE_OPTIONS``; the backend holds them in a namespace made by `names`.
tests/test_tt_export.py runs a trial and the exported script against the tt-xla stand-in
and checks that both make the same calls.

0. Before torch_xla is imported: the backend's ``trial_env`` (``TT_RUNTIME_TRACE_REGION_SIZE``
   when trace is on); the runtime reads it once, at import.
1. `SELECT_DEVICE` (``initialize``), before the model is built.
2. `PREPARE` (``prepare``), on the study's fp32 model.
3. `CAST_INPUT` (``host_input``), once, outside the timed loop.
4. Each timed iteration: `TO_DEVICE` (``to_device``), the model, ``output.to("cpu")`` (the
   trial process's loop and ``Backend.to_host``, the same for every backend).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

#: The modules the steps use, by the name the script imports them as.
MODULES = {
    "torch": "torch",
    "torch_xla": "torch_xla",
    "xm": "torch_xla.core.xla_model",
    "xr": "torch_xla.runtime",
    "tt_torch": "tt_torch",  # importing it registers the "tt" torch.compile backend
}


@dataclass(frozen=True)
class Step:
    """One call of the recipe: its script line and the same call on the backend's names."""

    source: str
    run: Callable[[SimpleNamespace], Any]
    #: the name the call's value is bound to (``model = model.eval()``), if any
    assign: str | None = None
    #: the name whose value must be truthy for the call to be made (no empty override map)
    only_if: str | None = None
    #: why, a comment above the line in the script
    why: str = ""

    def __call__(self, names: SimpleNamespace) -> Any:
        """Make the call on `names` (binding `assign` there); returns its value."""
        if self.only_if is not None and not getattr(names, self.only_if):
            return None
        value = self.run(names)
        if self.assign is not None:
            setattr(names, self.assign, value)
        return value

    def lines(self) -> list[str]:
        """The step as unindented script lines."""
        call = f"{self.assign} = {self.source}" if self.assign else self.source
        why = [f"# {self.why}"] if self.why else []
        if self.only_if is not None:
            return [*why, f"if {self.only_if}:", f"    {call}"]
        return [*why, call]


def names(*modules: str, **values: Any) -> SimpleNamespace:
    """The steps' names: `modules` (keys of `MODULES`, imported in this order) and `values`."""
    imported = {name: importlib.import_module(MODULES[name]) for name in modules}
    return SimpleNamespace(**imported, **values)


SELECT_DEVICE = Step(
    'xr.set_device_type("TT")',
    lambda n: n.xr.set_device_type("TT"),
    why="By default torch_xla uses the CPU device: select the Tenstorrent one.",
)

PREPARE: tuple[Step, ...] = (
    Step("model.eval()", lambda n: n.model.eval(), assign="model"),
    Step("model.to(torch.bfloat16)", lambda n: n.model.to(n.torch.bfloat16), assign="model"),
    Step(
        "tt_torch.apply_weight_dtype_overrides(model, WEIGHT_DTYPE_OVERRIDES)",
        lambda n: n.tt_torch.apply_weight_dtype_overrides(n.model, n.WEIGHT_DTYPE_OVERRIDES),
        only_if="WEIGHT_DTYPE_OVERRIDES",
        why="Before compile: the overrides must be in the traced graph.",
    ),
    Step(
        "torch_xla.set_custom_compile_options(COMPILE_OPTIONS)",
        lambda n: n.torch_xla.set_custom_compile_options(n.COMPILE_OPTIONS),
    ),
    Step('model.compile(backend="tt")', lambda n: n.model.compile(backend="tt")),
    Step("xm.xla_device()", lambda n: n.xm.xla_device(), assign="device"),
    Step("model.to(device)", lambda n: n.model.to(n.device), assign="model"),
)

CAST_INPUT = Step(
    "inputs.to(torch.bfloat16)", lambda n: n.inputs.to(n.torch.bfloat16), assign="inputs"
)

TO_DEVICE = Step("inputs.to(device)", lambda n: n.inputs.to(n.device))
