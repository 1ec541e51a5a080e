"""The extension point for device families."""

from __future__ import annotations

import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune.errors import UsageError
from autotune.wire import Status, TrialConfig, TrialResult

if TYPE_CHECKING:
    import torch

# Failures every backend can meet; backends put their own, more specific patterns first.
GENERIC_FAILURES: tuple[tuple[Status, re.Pattern[str]], ...] = (
    (
        Status.OOM,
        re.compile(r"can't allocate memory|MemoryError|std::bad_alloc|out of memory", re.I),
    ),
)


@dataclass(frozen=True)
class Knob:
    """A backend-specific searched dimension beyond the four common ones."""

    name: str
    choices: tuple[Any, ...]
    doc: str
    #: choices offered only when a space file names them, each with `opt_in_warning`
    opt_in: tuple[Any, ...] = ()
    opt_in_warning: str = ""
    #: a boolean dimension (e.g. "trace") without which the knob changes nothing: the knob
    #: is left out of configs where that dimension is off, and the sampler does not flip it
    only_with: str | None = None


def run_probe(
    python: str, code: str, *args: str, env: dict[str, str], timeout: float, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `code` in the trial interpreter `python` (what trials could import there is asked
    in a child process: the tuner never imports torch or device libraries to find out).
    One-line UsageError when the interpreter does not run."""
    try:
        return subprocess.run(
            [python, "-c", code, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=check,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"trial python {python!r} does not run: {exc}") from None


class Backend(ABC):
    """A device family: which knobs it offers, and how a config becomes a runnable model.

    Contract. The class attributes and `trial_env`/`classify`/`check_devices`/
    `retry_config` are used by the tuner and runner, and `compile_options` by the export
    (and by the backend's own `prepare`): none of them may import torch or device libraries.
    `initialize`, `prepare`, `device_name`, `host_input`, `to_device`, `to_host` and
    `synchronize` run only inside the trial process, once per process (device runtimes
    keep global state). `prepare` returns a callable that the trial process calls as the
    model is called (``run(x)``, ``run(*x)`` or ``run(**x)`` for a tensor, a tuple or a
    dict batch: `autotune.pytree.call`) and that returns the model's output on the device.
    The trial process makes the host batch once with `host_input` (its floating tensors),
    then times `to_host(run(to_device(x)))` per iteration, tensor by tensor, the loop users
    run, and calls `synchronize()` at each block end.
    """

    name: str
    #: dtypes the weight map may choose from, highest precision first.
    weight_dtypes: tuple[str, ...]
    #: op kinds whose weight dtype the backend honours ("linear", "conv").
    weight_kinds: frozenset[str]
    activation_dtypes: tuple[str, ...]
    #: whether the backend can record and replay the dispatch sequence (the trace knob).
    has_trace: bool = False
    #: extra searched dimensions, in the order they are shown.
    knobs: tuple[Knob, ...] = ()
    #: modules the trial interpreter must be able to import, and how to get them.
    trial_modules: tuple[str, ...] = ("torch",)
    install_hint: str = "install torch in it: pip install 'torch>=2.4,<2.14'"
    #: environment variable that restricts a trial process to one device (--devices), if any.
    visible_devices_env: str | None = None
    #: (status, pattern) checked against the trial process's stderr and exception text;
    #: the first match wins.
    failure_patterns: tuple[tuple[Status, re.Pattern[str]], ...] = ()
    #: whether trials compute on this host's CPU cores: concurrent slots then split them,
    #: and trials from different machines are not comparable.
    computes_on_host_cpu: bool = False
    #: whether trials may be forked from a server that has imported torch
    #: (autotune.launch.forkserver) instead of spawned: only where the device runtime holds
    #: no state, threads or device handles after import (tt: torch_xla reads its environment
    #: at import; plain spawn).
    fork_trials: bool = False
    #: The reference recipe on this backend, queued first and reported as the reference the
    #: study must beat: TrialConfig field values, plus "weights" (every tunable weight's
    #: dtype) and knob values; knobs not named take their first choice. None: no reference.
    reference_recipe: Mapping[str, Any] | None = None
    #: for a backend emulating another device: one line saying what is exact and what is
    #: modelled, shown when a study starts
    emulation_note: str | None = None
    #: lines shown when a study starts (e.g. an optional compiler that is not installed)
    start_notes: tuple[str, ...] = ()

    @abstractmethod
    def compile_options(self, config: TrialConfig) -> dict[str, Any]:
        """The exact options this backend's compiler receives for `config` (also exported)."""

    def trial_env(self, config: TrialConfig) -> dict[str, str]:
        """Environment the trial process needs before it starts (device libraries read it
        early)."""
        return {}

    def check_devices(self, python: str, devices: Sequence[str] | None) -> None:  # noqa: B027
        """Raise UsageError (one line) when trials could not reach their device from the
        trial interpreter `python` (each of `devices`, as `visible_devices_env` restricts
        it). Tuner side: probe in a child process, never import device libraries here."""

    def cannot_import(
        self, python: str, modules: Sequence[str], why: str | None = None
    ) -> UsageError:
        """The one line saying that the trial interpreter lacks `modules`, and what to do."""
        reason = f" ({why})" if why else ""
        return UsageError(
            f"trial python {python} cannot import {', '.join(modules)}{reason}; {self.install_hint}"
        )

    def retry_config(self, config: TrialConfig, result: TrialResult) -> TrialConfig | None:
        """A config to retry once after `result` failed (e.g. with a larger trace region),
        or None to keep the failure."""
        return None

    def classify(self, text: str) -> Status | None:
        for status, pattern in (*self.failure_patterns, *GENERIC_FAILURES):
            if pattern.search(text):
                return status
        return None

    # --- trial-process side -------------------------------------------------------------------

    def initialize(self, config: TrialConfig) -> None:  # noqa: B027 - optional hook
        """Runtime setup before the model is built (e.g. selecting the device type)."""

    @abstractmethod
    def device_name(self) -> str: ...

    @abstractmethod
    def prepare(self, model: torch.nn.Module, config: TrialConfig) -> Callable[..., Any]:
        """Apply `config` to the fp32 eval-mode `model` and compile it."""

    def host_input(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        """One floating-point tensor of the batch as the user's program holds it on the host
        before each inference (integer and bool tensors are not passed here),
        made once, outside the timed loop. The default keeps the study's input as it is
        (e.g. fp32 from the data pipeline), so converting it is part of each timed
        iteration; a backend whose reference recipe prepares the input once (tt) converts
        it here instead."""
        return x

    @abstractmethod
    def to_device(self, x: torch.Tensor, config: TrialConfig) -> torch.Tensor:
        """Move one tensor of a host batch to the device (timed, every iteration; a batch
        may hold several: a dict or tuple). Floating-point tensors may be cast to the
        activation dtype; integer and bool tensors (token ids, masks) must keep their dtype.
        It must also accept a tensor that did not go through `host_input` (e.g. the eval
        set's batches)."""

    def to_host(self, y: torch.Tensor) -> torch.Tensor:
        return y.to("cpu")

    def synchronize(self) -> None:  # noqa: B027 - a no-op is right for synchronous devices
        """Wait until queued device work is done."""

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}

    def numerics(self) -> dict[str, str]:
        """How this backend computes, where it changes the numbers and may differ from one
        machine to the next (recorded with every result; trial-process side)."""
        return {}
