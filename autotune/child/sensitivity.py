"""The per-layer sensitivity pass (trial-process side): accuracy with one weight at a time
lowered to Tenstorrent's weight formats through the emulated card numerics.

The rows it returns are read, ranked and drawn by `autotune.sensitivity`. The pass runs in
one trial process and is cached in the cache directory under a key of the model and its
weights (the fp32 reference's fingerprint, which covers the eval set and `eval_limit`), the
numerics rule and the code that computes it, so a new database or a new study never pays
for it again. It is fast because nothing is computed twice: the fp32 reference is shared
with the studies (`autotune.child.reference`), each lowered weight is rounded once, and the
layers that run before a lowered weight are replayed from the baseline pass, not recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.backends.tt_options import FIDELITIES, MATH_FIDELITY
from autotune.files import write_atomic
from autotune.paths import PROJECT_ROOT
from autotune.wire import Status, TrialConfig, TrialJob, TrialResult

if TYPE_CHECKING:
    import torch

    from autotune.backends import Backend
    from studies import Study

EMULATION_BACKEND = "cpu-emulate-tt"  # exact card numerics; its first weight dtype is bf16
NUMERICS_RULE = "host"
EVAL_BATCH = 500
VERSION = 3  # part of the cache key, with the source of the modules that compute the rows
_CODE = (
    "autotune/child/sensitivity.py",
    "autotune/child/metrics.py",
    "autotune/numerics.py",
    "autotune/backends/cpu.py",
    "autotune/backends/_bf16.py",
    "autotune/backends/_torch_dtypes.py",
    "autotune/backends/_fidelity.py",
)


def run(
    job: TrialJob,
    study: Study,
    backend: Backend,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    environment: dict[str, Any],
) -> TrialResult:
    """The trial process's `sensitivity` mode: cached rows, or the pass, then cached."""
    from autotune.child import reference

    if not job.cache_dir:
        raise ValueError("a sensitivity job needs cache_dir")
    cache_dir = Path(job.cache_dir)
    model_name = job.config.model
    fp32 = study.build_model().eval()
    ref_key = reference.fingerprint(model_name, study, fp32, inputs, labels, job.eval_limit)
    path = cache_dir / "sensitivity" / f"{reference.safe_name(model_name)}-"
    path = Path(f"{path}{cache_key(ref_key, backend)[:20]}.json")
    cached = None if job.refresh_cache else read_cache(path)
    if cached is not None:
        try:
            return _result(cached, path, cached=True)
        except KeyError:
            pass  # incomplete: computed again below
    fp32_env = {k: v for k, v in environment.items() if k != "numerics"}  # plain fp32 there
    ref, ref_outputs = reference.ensure(
        model_name, study, inputs, labels, job.eval_limit, cache_dir, fp32_env, fp32, ref_key
    )
    rows = one_at_a_time(study, backend, job.config, inputs, labels, ref_outputs, ref.metric_value)
    fidelities = fidelity_rows(
        study, backend, job.config, inputs, labels, ref_outputs, ref.metric_value
    )
    rows = [rows[0], *fidelities, *rows[1:]]  # the whole model first: hifi4, then lower
    data = {
        "model": model_name,
        "eval_limit": job.eval_limit,
        "rule": NUMERICS_RULE,
        "backend": backend.name,
        "reference_fingerprint": ref_key,
        "reference_metric": ref.metric_value,
        "environment": environment,
        "rows": rows,
    }
    write_atomic(path, json.dumps(data, indent=1))
    return _result(data, path, cached=False)


def read_cache(path: Path) -> dict[str, Any] | None:
    """A cached pass as `run` wrote it (rows and how they were computed); None when it is
    missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cache_key(reference_fingerprint: str, backend: Backend) -> str:
    """The model and weights (via the reference), the numerics and the code computing them."""
    h = hashlib.sha256(
        f"sensitivity-v{VERSION}|{reference_fingerprint}|{NUMERICS_RULE}|{backend.name}|"
        f"{','.join(backend.weight_dtypes)}".encode()
    )
    for rel in _CODE:
        h.update((PROJECT_ROOT / rel).read_bytes())
    return h.hexdigest()


def one_at_a_time(
    study: Study,
    backend: Backend,
    config: TrialConfig,
    inputs: Any,
    labels: torch.Tensor | None,
    reference: torch.Tensor,
    reference_metric: float | None,
    native_bf16: bool | None = None,
    replay: bool = True,
) -> list[dict[str, Any]]:
    """Accuracy with only one weight lowered, for each tunable weight and lower dtype.

    Eager, in batches of `config.batch_size`: this measures numerics, not speed. The first
    row is the baseline with nothing lowered (the backend's highest-precision weight dtype).
    bf16 runs natively or as fp32 rounded to bf16 after each op, as the backend chose for
    this CPU (`native_bf16` overrides it). `replay=False` computes every case in full.

    Nothing is computed twice: per batch the baseline runs once, recording every torch
    call's output; a case then replays the calls made before its weight's module starts
    (they cannot see the weight) and computes the rest. On the first batch each case is
    also run in full and must match bit for bit, or that weight is recomputed in full; a
    model whose calls do not replay cleanly is computed in full throughout."""
    import torch

    from autotune import pytree
    from autotune.backends.cpu import card_model, card_weight
    from autotune.child.metrics import score

    if native_bf16 is None:
        native_bf16 = backend.compute.native
    rule = getattr(backend, "numerics_rule", NUMERICS_RULE)
    # The bf16 card model; in fp32 it holds the same values (the recorder rounds each op).
    model = card_model(study.build_model(), {}, rule, native_bf16=True)
    if not native_bf16:
        model = model.float()
    layout = None
    single = isinstance(inputs, torch.Tensor)
    if (
        single
        and inputs.dim() == 4
        and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    ):
        layout = torch.channels_last  # oneDNN's fast layout for convolutions
        model = model.to(memory_format=layout)
    names = [w.name for w in study.tunable_weights(model) if w.kind in backend.weight_kinds]
    cases = [(n, d) for n in names for d in backend.weight_dtypes[1:]]
    params = dict(model.named_parameters())
    lowered = {(n, d): card_weight(params[n], d, rule, n) for n, d in cases}

    def batches() -> Any:
        for batch in pytree.split(inputs, config.batch_size):
            x = pytree.cast_floating(batch, torch.bfloat16)
            if not native_bf16:  # bf16 values held in fp32
                x = pytree.cast_floating(x, torch.float32)
            yield x if layout is None else x.contiguous(memory_format=layout)

    def forward(x: Any) -> torch.Tensor:
        return pytree.select_output(pytree.call(model, x), study.output).float()

    metric = study.scoring(labels is not None)
    with torch.no_grad():
        args = (model, forward, names, cases, lowered, batches, not native_bf16)
        try:
            outputs = _lowered_outputs(*args, replay=replay)
        except _ReplayError:
            outputs = _lowered_outputs(*args, replay=False)
    rows = []
    keys = [(None, backend.weight_dtypes[0]), *cases]
    for (name, dtype), outs in zip(keys, outputs, strict=True):
        metrics = score(torch.cat(outs), reference, labels, metric, reference_metric)
        rows.append({"weight": name, "dtype": dtype, **metrics})
    if MATH_FIDELITY in getattr(backend, "knobs", ()):
        rows[0]["fidelity"] = "hifi4"  # the card model's default: the exact bf16 product
    return rows


def fidelity_rows(
    study: Study,
    backend: Backend,
    config: TrialConfig,
    inputs: Any,
    labels: torch.Tensor | None,
    reference: torch.Tensor,
    reference_metric: float | None,
    native_bf16: bool | None = None,
) -> list[dict[str, Any]]:
    """The whole model at each math fidelity below HiFi4 (every weight bf16, fp32 Dst), for
    a backend that emulates fidelity: which fidelities this model can run at, before any
    card time. The baseline row of `one_at_a_time` is HiFi4 (the exact bf16 product).

    Rows: weight None, the backend's first weight dtype, and ``fidelity``; the fidelity
    phases are modelled (`autotune.backends._fidelity`), not bit-exact."""
    import torch

    from autotune import pytree
    from autotune.backends.cpu import card_model
    from autotune.child.metrics import score

    if MATH_FIDELITY not in getattr(backend, "knobs", ()):
        return []
    if native_bf16 is None:
        native_bf16 = backend.compute.native
    rule = getattr(backend, "numerics_rule", NUMERICS_RULE)
    metric = study.scoring(labels is not None)
    rows = []
    with torch.no_grad():
        for fidelity in FIDELITIES[1:]:
            model = card_model(study.build_model(), {}, rule, native_bf16, fidelity, True)
            outs = []
            for batch in pytree.split(inputs, config.batch_size):
                x = pytree.cast_floating(batch, torch.bfloat16)
                if not native_bf16:  # bf16 values held in fp32
                    x = pytree.cast_floating(x, torch.float32)
                out = pytree.select_output(pytree.call(model, x), study.output)
                outs.append(out.float())
            figures = score(torch.cat(outs), reference, labels, metric, reference_metric)
            row = {"weight": None, "dtype": backend.weight_dtypes[0], "fidelity": fidelity}
            rows.append(row | figures)
    return rows


class _ReplayError(Exception):
    """The model's calls did not replay as recorded."""


def _lowered_outputs(
    model: torch.nn.Module,
    forward: Any,
    names: list[str],
    cases: list[tuple[str, str]],
    lowered: dict[tuple[str, str], torch.Tensor],
    batches: Any,
    rounding: bool,
    replay: bool,
) -> list[list[torch.Tensor]]:
    """Per row (baseline, then each case): the output of each batch."""
    import torch

    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    originals = {n: params[n].detach().clone() for n in names}
    owners = {n: n.rpartition(".")[0] for n in names}
    ops = _Recorder(rounding)
    stops: dict[str, int] = {}  # owner module -> calls replayed before it starts
    outputs: list[list[torch.Tensor]] = [[] for _ in range(1 + len(cases))]
    for i, x in enumerate(batches()):
        hooks = []
        if i == 0 and replay:
            for owner in set(owners.values()):
                # First among the module's hooks: its other pre-hooks may read the weight.
                hook = _first(owner, stops, ops)
                hooks.append(modules[owner].register_forward_pre_hook(hook, prepend=True))
        ops.record(track=i == 0)
        try:
            with ops:
                outputs[0].append(forward(x))
        finally:
            for h in hooks:
                h.remove()
        if i == 0:
            stops = {owner: ops.safe_stop(stop) for owner, stop in stops.items()}
        for k, (name, dtype) in enumerate(cases, start=1):
            params[name].copy_(lowered[(name, dtype)])
            ops.replay(stops.get(owners[name], 0))
            with ops:
                out = forward(x)
            if ops.stop:
                ops.check_unchanged()
            if i == 0 and ops.stop:
                ops.replay(0)
                with ops:
                    full = forward(x)
                if not torch.equal(out, full):
                    stops[owners[name]], out = 0, full  # the replay missed an effect
            params[name].copy_(originals[name])
            outputs[k].append(out)
    return outputs


def _first(owner: str, stops: dict[str, int], ops: _Recorder) -> Any:
    def hook(module: Any, args: Any) -> None:
        stops.setdefault(owner, ops.calls)

    return hook


class _Recorder:
    """A torch function mode's logic: record each call's output (`record`), or return the
    first `stop` recorded outputs instead of computing them (`replay`); fp32 outputs of
    computed calls are rounded to bf16 values when `rounding`."""

    def __init__(self, rounding: bool) -> None:
        from torch.overrides import TorchFunctionMode

        from autotune.backends._bf16 import round_result

        recorder = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                return recorder.call(func, args, kwargs or {})

        self._mode_type = Mode
        self._round = round_result if rounding else None
        self.funcs: list[Any] = []
        self.outs: list[Any] = []
        self.tensors: list[list[Any]] = []  # the tensors among each call's output
        self.mutators: list[list[int]] = []  # calls that changed each output in place
        self.final: list[list[int]] = []
        self.recording, self.track, self.stop, self.calls = True, False, 0, 0

    def record(self, track: bool) -> None:
        """Record the next forward; `track`: also find which calls change earlier outputs
        in place (quadratic in the number of calls: once, on the first batch)."""
        self.funcs, self.outs, self.tensors = [], [], []
        if track:
            self.mutators = []
        self.recording, self.track, self.stop, self.calls = True, track, 0, 0

    def replay(self, stop: int) -> None:
        self.recording, self.stop, self.calls = False, stop, 0

    def call(self, func: Any, args: tuple, kwargs: dict) -> Any:
        i = self.calls
        self.calls += 1
        if not self.recording and i < self.stop:
            if i >= len(self.funcs) or self.funcs[i] != func:
                raise _ReplayError(f"call {i} is {func}, not the recorded one")
            return self.outs[i]
        out = func(*args, **kwargs)
        if self._round is not None:
            out = self._round(func, out)
        if self.recording:
            if self.track:
                versions = [[t._version for t in ts] for ts in self.tensors]
                for k, before in enumerate(self._versions):
                    if versions[k] != before:
                        self.mutators[k].append(i)
                self.mutators.append([])
            self.funcs.append(func)
            self.outs.append(out)
            self.tensors.append(_tensors(out))
            if self.track:
                self._versions = [[t._version for t in ts] for ts in self.tensors]
        return out

    def safe_stop(self, stop: int) -> int:
        """The largest replay stop <= `stop` that no in-place change straddles: a recorded
        output changed by a later call is replayed only with that call."""
        while stop > 0 and any(
            k < stop and any(j >= stop for j in m) for k, m in enumerate(self.mutators)
        ):
            stop -= 1
        return stop

    def check_unchanged(self) -> None:
        if [[t._version for t in ts] for ts in self.tensors] != self.final:
            raise _ReplayError("a computed call changed a recorded output in place")

    def __enter__(self) -> _Recorder:
        if self.recording and self.track:
            self._versions = []
        self._mode = self._mode_type()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        if self.recording:
            self.final = [[t._version for t in ts] for ts in self.tensors]


def _tensors(out: Any) -> list[Any]:
    import torch

    items = out if isinstance(out, tuple | list) else (out,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def _result(data: dict[str, Any], path: Path, cached: bool) -> TrialResult:
    metrics = {}
    if data.get("reference_metric") is not None:
        metrics["reference_metric"] = data["reference_metric"]
    return TrialResult(
        Status.OK,
        metrics=metrics,
        table=data["rows"],
        environment=data["environment"],
        artifacts={"sensitivity": str(path), "cached": str(cached).lower()},
    )
