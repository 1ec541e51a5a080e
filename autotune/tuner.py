"""The study loop: ask -> run one trial in a subprocess -> tell.

All storage writes happen here, in the tuner process; workers only return results.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.analysis import best_feasible, trial_rows
from autotune.backends import Backend, get_backend
from autotune.config import Status, TrialConfig, TrialResult, WorkerJob
from autotune.errors import UsageError
from autotune.runner import PROJECT_ROOT, RunnerSettings, run_job
from autotune.storage import STUDY_ATTR, open_storage
from search_spaces import SearchSpace, default_space
from studies import get_study

if TYPE_CHECKING:
    import optuna

# Interrupted trials are not part of the budget: they are re-queued and run again.
_NOT_COUNTED = {Status.INTERRUPTED.value}


@dataclass(frozen=True)
class StudyOptions:
    model: str
    backend: str = "cpu"
    trials: int = 50
    storage: str = "sqlite:///autotune.db"
    study_name: str | None = None
    max_accuracy_drop: float = 0.5
    space_file: Path | None = None
    max_batch_size: int | None = None
    measure_seconds: float = 1.0
    warmup_iters: int = 3
    timeout_s: float | None = 300.0
    memory_limit_bytes: int | None = None
    worker_python: str | None = None
    seed: int | None = None
    eval_limit: int | None = None
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    progress: bool = True

    @property
    def name(self) -> str:
        return self.study_name or f"{self.model}-{self.backend}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autotune"


def build_space(opts: StudyOptions) -> SearchSpace:
    space = default_space(
        get_study(opts.model), get_backend(opts.backend), opts.max_batch_size, model=opts.model
    )
    return space.narrowed_by_file(opts.space_file) if opts.space_file else space


def check_worker_python(python: str, backend: Backend) -> None:
    """Fail early, in one line, when trials could never start in the worker interpreter."""
    probe = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    modules = ["autotune", *backend.worker_modules]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    try:
        out = subprocess.run(
            [python, "-c", probe, *modules],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"worker python {python!r} does not run: {exc}") from None
    if out:
        raise UsageError(
            f"worker python {python} cannot import {', '.join(out)}; {backend.install_hint}"
        )


class Tuner:
    def __init__(self, opts: StudyOptions) -> None:
        import optuna

        if opts.trials < 1:
            raise UsageError(f"--trials must be at least 1, not {opts.trials}")
        self.opts = opts
        self.space = build_space(opts)
        self.runner = RunnerSettings(
            python=opts.worker_python or RunnerSettings.python,
            timeout_s=opts.timeout_s,
            cache_dir=opts.cache_dir,
        )
        check_worker_python(self.runner.python, get_backend(opts.backend))
        optuna.logging.set_verbosity(logging.WARNING)
        storage = open_storage(opts.storage)
        self.study = optuna.create_study(
            study_name=opts.name,
            storage=storage,
            directions=["maximize", "minimize"],
            sampler=optuna.samplers.TPESampler(seed=opts.seed, multivariate=True),
            load_if_exists=True,
        )
        self.meta = self._check_metadata()

    # --- study metadata ------------------------------------------------------------------

    def _check_metadata(self) -> dict[str, Any]:
        meta = self.study.user_attrs.get(STUDY_ATTR)
        wanted = {
            "model": self.opts.model,
            "backend": self.opts.backend,
            "space": self.space.signature(),
            "max_accuracy_drop": self.opts.max_accuracy_drop,
        }
        if meta is None:
            meta = {**wanted, "trials_budget": self.opts.trials}
            self.study.set_user_attr(STUDY_ATTR, meta)
            return meta
        for key, value in wanted.items():
            if meta.get(key) != value:
                raise UsageError(
                    f"study {self.opts.name!r} exists with a different {key.replace('_', ' ')}; "
                    f"resume it with its original options or start a new one with --study-name"
                )
        if meta.get("trials_budget") != self.opts.trials:
            meta = {**meta, "trials_budget": self.opts.trials}
            self.study.set_user_attr(STUDY_ATTR, meta)
        return meta

    def _reference(self) -> tuple[str, float | None]:
        """fp32 outputs on the eval set, computed once per study and cached on disk."""
        key = hashlib.sha1(f"{self.opts.storage}|{self.opts.name}".encode()).hexdigest()[:12]
        path = (
            self.opts.cache_dir
            / "reference"
            / f"{self.opts.name}-{key}-{self.opts.eval_limit or 'all'}.pt"
        )
        meta_key = "reference_accuracy"
        if path.exists() and meta_key in self.meta:
            return str(path), self.meta[meta_key]
        path.parent.mkdir(parents=True, exist_ok=True)
        config = TrialConfig(model=self.opts.model, backend="cpu", batch_size=1)
        job = WorkerJob(
            config, mode="reference", reference_path=str(path), eval_limit=self.opts.eval_limit
        )
        result = run_job(job, self.runner)
        if not result.ok:
            last = (result.stderr_tail.strip().splitlines() or [""])[-1]
            raise UsageError(
                f"the fp32 reference run failed ({result.status}): {result.message or last}"
            )
        self.meta = {
            **self.meta,
            meta_key: result.metrics.get("accuracy"),
            "reference_environment": result.environment,
        }
        self.study.set_user_attr(STUDY_ATTR, self.meta)
        return str(path), self.meta[meta_key]

    # --- the loop ------------------------------------------------------------------------

    def counted_trials(self) -> int:
        return sum(
            1
            for r in trial_rows(self.study)
            if r.state in ("COMPLETE", "PRUNED", "FAIL") and r.status not in _NOT_COUNTED
        )

    def run(self) -> None:
        reference_path, reference_accuracy = self._reference()
        done = self.counted_trials()
        bar = _progress(self.opts.trials, done, self.opts.progress)
        try:
            while done < self.opts.trials:
                trial = self.study.ask()
                config = self.space.suggest(trial)
                self._run_one(trial, config, reference_path, reference_accuracy)
                done += 1
                bar.update(1)
                best = best_feasible(trial_rows(self.study))
                if best is not None:
                    bar.set_postfix_str(
                        f"best feasible {best.throughput:,.0f} samples/s (#{best.number})"
                    )
        finally:
            bar.close()

    def _run_one(
        self, trial: optuna.Trial, config: TrialConfig, ref_path: str, ref_acc: float | None
    ) -> None:
        import optuna

        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("config_key", config.key())
        earlier = self._earlier_outcome(config)
        if earlier is not None:
            self._copy_outcome(trial, earlier)
            return
        job = WorkerJob(
            config,
            measure_seconds=self.opts.measure_seconds,
            warmup_iters=self.opts.warmup_iters,
            warmup_seconds=self.opts.measure_seconds / 2,
            reference_path=ref_path,
            reference_accuracy=ref_acc,
            eval_limit=self.opts.eval_limit,
            memory_limit_bytes=self.opts.memory_limit_bytes,
        )
        try:
            result = run_job(job, self.runner)
        except KeyboardInterrupt:
            self._record(trial, TrialResult(Status.INTERRUPTED, "study interrupted"))
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        self._finish(trial, result, ref_acc)

    def _earlier_outcome(self, config: TrialConfig) -> optuna.trial.FrozenTrial | None:
        """A finished trial that makes running `config` pointless: the same config, or the
        same config at a smaller batch size that ran out of memory."""
        import optuna

        finished = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL,
        )
        key = config.key()
        for t in self.study.get_trials(deepcopy=False, states=finished):
            status = t.user_attrs.get("status")
            if status in _NOT_COUNTED:
                continue
            if t.user_attrs.get("config_key") == key:
                return t
            if status == Status.OOM and "config" in t.user_attrs:
                other = TrialConfig.from_dict(t.user_attrs["config"])
                if (
                    other.batch_size <= config.batch_size
                    and other.with_batch_size(config.batch_size) == config
                ):
                    return t
        return None

    def _copy_outcome(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        """Record what an earlier trial already showed, without spawning a worker."""
        origin = earlier.user_attrs.get("duplicate_of", earlier.number)
        for key in ("status", "metrics"):
            if key in earlier.user_attrs:
                trial.set_user_attr(key, earlier.user_attrs[key])
        same = earlier.user_attrs.get("config_key") == trial.user_attrs["config_key"]
        trial.set_user_attr("duplicate_of", origin)
        oom_batch = earlier.user_attrs.get("config", {}).get("batch_size")
        message = (
            f"same config as trial {origin}; not measured again"
            if same
            else f"batch {oom_batch} ran out of memory in trial {origin}; not run"
        )
        trial.set_user_attr("message", message)
        for name, value in earlier.constraints.items():
            trial.set_constraint(name, value)
        self.study.tell(trial, earlier.values, state=earlier.state)

    def _finish(self, trial: optuna.Trial, result: TrialResult, ref_acc: float | None) -> None:
        import optuna

        self._record(trial, result)
        if result.status is Status.OOM:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
        if result.status not in (Status.OK, Status.NAN):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        metrics = result.metrics
        if result.status is Status.NAN:
            # Garbage outputs: as bad as predicting nothing right. Measured, never feasible.
            metrics["accuracy_drop"] = 100.0 * (ref_acc if ref_acc is not None else 1.0)
            trial.set_user_attr("metrics", metrics)
        drop = metrics["accuracy_drop"]
        trial.set_constraint("accuracy_drop", drop - self.opts.max_accuracy_drop)
        self.study.tell(trial, [metrics["throughput_samples_per_s"], drop])

    @staticmethod
    def _record(trial: optuna.Trial, result: TrialResult) -> None:
        trial.set_user_attr("status", str(result.status))
        trial.set_user_attr("message", result.message)
        trial.set_user_attr("metrics", _finite(result.metrics))
        trial.set_user_attr("timings", result.timings)
        if result.block_times:
            trial.set_user_attr("block_times", result.block_times)
            trial.set_user_attr("iters_per_block", result.iters_per_block)
        if result.environment:
            trial.set_user_attr("environment", result.environment)
        if result.stderr_tail:
            trial.set_user_attr("stderr_tail", result.stderr_tail)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    # JSON user attrs cannot hold NaN/inf portably; keep the keys, store None.
    return {
        k: (v if isinstance(v, int | float) and math.isfinite(v) else None)
        for k, v in metrics.items()
    }


def _progress(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="trials",
        unit="trial",
        disable=not enabled,
        dynamic_ncols=True,
    )
