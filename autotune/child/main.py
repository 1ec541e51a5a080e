"""Child entry point: ``python -m autotune.child.main JOB.json RESULT.json``.

One trial per process: device runtimes keep process-global state (compile options, weight
overrides, caches), so a fresh process is the only honest isolation. The trial process always
writes a TrialResult, failures included; it imports nothing the tuner alone needs (no
optuna), so it runs in any interpreter with torch and the backend's device libraries.
"""

from __future__ import annotations

import faulthandler
import json
import sys
import time
import traceback
from pathlib import Path

from autotune.backends import Backend, get_backend
from autotune.child.batches import eval_set
from autotune.child.environment import environment
from autotune.wire import JobMode, Status, TrialJob, TrialResult
from studies import Study, get_study


def preload() -> None:
    """What a fork server imports once for all its children, beyond this module: every
    registered study module (no torch op runs)."""
    import studies

    studies.study_names()


def main(argv: list[str], preloaded_bytes: int = 0) -> int:
    """`preloaded_bytes`: data a fork server's child inherited beyond a fresh interpreter
    with torch (`autotune.launch.forkserver`); not the trial's, so not charged to its memory
    limit."""
    if len(argv) != 2:
        print("usage: python -m autotune.child.main JOB.json RESULT.json", file=sys.stderr)
        return 2
    # A native crash (segfault in a kernel or runtime) then leaves the Python stack on stderr,
    # which the tuner keeps on the trial.
    faulthandler.enable()
    job = TrialJob.from_dict(json.loads(Path(argv[0]).read_text()))
    if job.memory_limit_bytes:
        import resource

        # RLIMIT_DATA makes allocations fail for real (torch raises), unlike RSS limits.
        limit = job.memory_limit_bytes + preloaded_bytes
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    backend = get_backend(job.config.backend)
    started = time.perf_counter()
    try:
        from autotune.child.trial import run_trial

        run = {
            JobMode.TRIAL: run_trial,
            JobMode.REFERENCE: run_reference,
            JobMode.SENSITIVITY: run_sensitivity,
            JobMode.DESCRIBE: run_describe,
        }[job.mode]
        result = run(job, get_study(job.config.model), backend)
    except Exception as exc:  # failure is a value: classify it and report it
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        status = backend.classify(f"{type(exc).__name__}: {exc}\n{text}") or Status.CRASH
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result = TrialResult(status=status, message=f"{type(exc).__name__}: {message}"[:500])
    result.timings["trial_s"] = time.perf_counter() - started
    result.write(Path(argv[1]))
    return 0


def run_reference(job: TrialJob, study: Study, backend: Backend) -> TrialResult:
    """fp32 eager outputs on CPU, the baseline every trial's accuracy is measured against:
    from the cache in `job.cache_dir`, or computed and stored there (`autotune.child.reference`)."""
    from autotune.child import reference

    inputs, labels = eval_set(job, study)
    return reference.run(job, study, inputs, labels, environment(backend))


def run_describe(job: TrialJob, study: Study, backend: Backend) -> TrialResult:
    """One fp32 pass on the study's inputs: what the model is (`autotune.child.describe`)."""
    from autotune.child import describe

    return describe.run(job, study)


def run_sensitivity(job: TrialJob, study: Study, backend: Backend) -> TrialResult:
    """Accuracy with one weight at a time lowered (`autotune.child.sensitivity`), cached."""
    from autotune.child import sensitivity

    inputs, labels = eval_set(job, study)
    return sensitivity.run(job, study, backend, inputs, labels, environment(backend))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
