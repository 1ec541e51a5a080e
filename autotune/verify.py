"""`autotune verify best.json`: replay an exported config here and compare with the export.

The replay is the tuner's own protocol: the same `TrialJob` (`jobs.trial_job`, with the
export's measurement settings), run by `launch.runner.run_job` in a fresh trial process per
round, against an fp32 reference computed on this machine. Accuracy passes when the config
still meets the study's constraint here; throughput passes when the median of the rounds
is within `max_slowdown` of the exported figure.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune import defaults, records_legacy
from autotune.commands import command_line, verify_args
from autotune.errors import UsageError
from autotune.export import PROTOCOL, check_schema, load_config
from autotune.export_check import check_export
from autotune.measure import percentile_key
from autotune.records import drop_label
from autotune.tables import config_label, format_table, num
from autotune.wire import TrialResult

ACCURACY_KEYS = ("accuracy", "metric_drop", "agreement", "pcc")


def read_export(path: Path) -> dict[str, Any]:
    """The parsed export, in the current layout ("schema" as written); one-line UsageError
    for anything a replay cannot start from: every field checked for its type and range
    (`autotune.export_check`) before anything runs."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{path} is not JSON an export can be: nested too deep") from None
    check_schema(data)
    for key in ("metrics", "constraint", "backend_options", "knobs"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise UsageError(
                f"{path} is not a valid autotune export: {key} must be dict, not "
                f"{type(data[key]).__name__}"
            )
    current = records_legacy.export_data(data)
    for key in ("model", "batch_size", "weight_dtype_overrides", "metrics"):
        if key not in current:
            raise UsageError(f"{path} is not a complete autotune export: {key!r} missing")
    check_export(current, path)
    if (current.get("metrics") or {}).get("throughput_samples_per_s") is None:
        raise UsageError(f"{path} holds no measured throughput (metrics.throughput_samples_per_s)")
    return current


def replay_protocol(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The export's measurement settings; schema 1 did not record them: StudyOptions'
    defaults then, and a note saying so."""
    from autotune.study_options import StudyOptions

    unrecorded = {key: getattr(StudyOptions, name) for key, name in PROTOCOL.items()}
    stored = data.get("protocol")
    if not isinstance(stored, dict):
        note = (
            f"export schema {data['schema']} does not record how it was measured; replayed "
            f"with the defaults (measure {unrecorded['measure_seconds']:g} s, full eval set)"
        )
        return unrecorded, [note]
    return {key: stored.get(key, unrecorded[key]) for key in PROTOCOL}, []


@dataclass
class VerifyReport:
    source: str
    schema: int
    config: dict[str, Any]
    provenance: dict[str, Any]
    protocol: dict[str, Any]
    rounds: list[dict[str, Any]]  # status, message, throughput, accuracy metrics, per round
    exported: dict[str, Any]  # the export's metrics
    max_slowdown: float
    max_metric_drop: float  # in the metric's unit
    min_agreement_percent: float | None
    environment: list[dict[str, Any]]  # what, exported, here, changed
    notes: list[str] = field(default_factory=list)
    # The study's metric (the export's; schemas 1-3: top-1).
    metric: dict[str, Any] = field(default_factory=lambda: dict(records_legacy.TOP1))

    @property
    def ok_rounds(self) -> list[dict[str, Any]]:
        return [r for r in self.rounds if r["status"] == "ok"]

    @property
    def replay_throughput(self) -> float | None:
        tps = [r["throughput_samples_per_s"] for r in self.ok_rounds]
        return statistics.median(tps) if tps else None

    def ratios(self) -> dict[str, float] | None:
        """Here / export: median over rounds, with the rounds' range, and the range of the
        export's own measurements around its figure (the noise it had)."""
        here = self.replay_throughput
        if here is None:
            return None
        base = self.exported["throughput_samples_per_s"]
        rounds = [r["throughput_samples_per_s"] / base for r in self.ok_rounds]
        measured = self.exported.get("throughput_measurements") or [base]
        return {
            "median": here / base,
            "rounds_min": min(rounds),
            "rounds_max": max(rounds),
            "export_min": min(measured) / base,
            "export_max": max(measured) / base,
        }

    def constraint_latency_ms(self) -> float | None:
        """The study's latency budget, replayed as its trials were measured (schema 5)."""
        budget = self.protocol.get("max_latency_ms")
        return float(budget) if isinstance(budget, int | float) else None

    def worst(self, key: str, highest: bool) -> float | None:
        values = [r[key] for r in self.ok_rounds if r.get(key) is not None]
        if not values:
            return None
        return max(values) if highest else min(values)

    def failure(self) -> str | None:
        """Why the export does not hold here (one line), or None."""
        failed = [(i, r) for i, r in enumerate(self.rounds, 1) if r["status"] != "ok"]
        if failed:
            i, r = failed[0]
            return (
                f"round {i} of {len(self.rounds)} did not measure ({r['status']}): "
                f"{r['message'] or 'no message'}"
            )
        drop = self.worst("metric_drop", highest=True)
        if drop is None:
            return "the replay reported no accuracy drop"
        if drop > self.max_metric_drop + 1e-9:
            unit = f" {self.metric['unit']}" if self.metric.get("unit") else ""
            return (
                f"{self.metric.get('name', 'metric')} drop {drop:.4g}{unit} vs fp32 here, "
                f"over the {self.max_metric_drop:g} allowed (export: "
                f"{num(self.exported.get('metric_drop'), '.4g')})"
            )
        if self.min_agreement_percent is not None:
            agreement = 100 * (self.worst("agreement", highest=False) or 0.0)
            if agreement < self.min_agreement_percent - 1e-9:
                return (
                    f"agreement with fp32 {agreement:.3f}% here, under the "
                    f"{self.min_agreement_percent:g}% required"
                )
        budget = self.constraint_latency_ms()
        if budget is not None:
            latency = statistics.median(r.get("latency_ms") or math.inf for r in self.ok_rounds)
            if latency > budget * (1 + self.max_slowdown):
                return (
                    f"p{self.protocol.get('latency_percentile', 95):g} latency {latency:.3g} ms "
                    f"per batch here (median of {len(self.rounds)} rounds), over the budget of "
                    f"{budget:g} ms by more than the {self.max_slowdown:.0%} allowed"
                )
        ratio = self.ratios()
        assert ratio is not None  # every round measured
        if ratio["median"] < 1.0 - self.max_slowdown:
            return (
                f"throughput {ratio['median']:.2f}x of the export (median of "
                f"{len(self.rounds)} rounds: {self.replay_throughput:,.0f} vs "
                f"{self.exported['throughput_samples_per_s']:,.0f} samples/s), more than the "
                f"{self.max_slowdown:.0%} slowdown allowed"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        reason = self.failure()
        return {
            "source": self.source,
            "schema": self.schema,
            "passed": reason is None,
            "reason": reason,
            "config": self.config,
            "provenance": self.provenance,
            "protocol": self.protocol,
            "limits": {
                "max_slowdown": self.max_slowdown,
                "max_metric_drop": self.max_metric_drop,
                "min_agreement_percent": self.min_agreement_percent,
            },
            "throughput": {
                "exported": self.exported["throughput_samples_per_s"],
                "exported_measurements": self.exported.get("throughput_measurements"),
                "replayed": [r["throughput_samples_per_s"] for r in self.ok_rounds],
                "replayed_median": self.replay_throughput,
                "ratio": self.ratios(),
            },
            "accuracy": {
                key: {
                    "exported": self.exported.get(key),
                    "replayed": [r.get(key) for r in self.ok_rounds],
                }
                for key in ACCURACY_KEYS
            },
            "rounds": self.rounds,
            "environment": self.environment,
            "notes": self.notes,
        }


def verify(
    path: Path,
    *,
    rounds: int = defaults.VERIFY_ROUNDS,
    max_slowdown: float = defaults.MAX_SLOWDOWN,
    max_metric_drop: float | None = None,
    trial_python: str | None = None,
    cache_dir: Path | None = None,
    log: Any = None,
    model: str | None = None,
    trust_model: bool = False,
) -> VerifyReport:
    """Replay the export at `path` `rounds` times here. Bad input raises UsageError.

    A model the export names by file or module (``x.py:ATTR``, ``pkg.mod:ATTR``) is code,
    and an export is a file people send each other: it is imported only when the user names
    it (`model`, which replaces the export's) or says the file is trusted (`trust_model`).
    The shipped studies (``mnist``, ...) are always replayed."""
    from autotune.backends import get_backend
    from autotune.jobs import fp32_reference, trial_job
    from autotune.launch.probes import check_trial_python
    from autotune.launch.runner import RunnerSettings, run_job
    from autotune.study_options import StudyOptions, default_cache_dir
    from studies import get_study
    from studies.sources import prefix_of

    if rounds < 1:
        raise UsageError(f"--rounds must be at least 1, not {rounds}")
    if not 0 <= max_slowdown < 1:
        raise UsageError(f"--max-slowdown is a fraction in [0, 1), not {max_slowdown:g}")
    if max_metric_drop is not None and not math.isfinite(max_metric_drop):
        raise UsageError(f"--max-metric-drop must be a finite number, not {max_metric_drop:g}")
    say = log or (lambda text: print(text, file=sys.stderr))
    data = read_export(path)
    config = load_config(data)
    if model is not None:
        config = replace(config, model=model)
    elif ":" in config.model and prefix_of(config.model) is None and not trust_model:
        # hf:, torchvision:, timm: name data (a directory, a registry name), not code.
        raise UsageError(
            f"{path} names the model {config.model!r}, code verify would import and run; "
            f"to run it, name it yourself: {command_line(*verify_args(str(path), config.model))}"
            " (or pass --trust-model)"
        )
    get_study(config.model)  # unknown model: UsageError (exit 2)
    backend = get_backend(config.backend)
    protocol, notes = replay_protocol(data)
    constraint = data.get("constraint") or {}
    metric = constraint.get("metric") or dict(records_legacy.TOP1)
    limit = max_metric_drop
    if limit is None:
        limit = constraint.get("max_metric_drop")
    if limit is None:
        limit = StudyOptions.max_accuracy_drop
        notes.append(f"the export records no accuracy limit; using {limit:g} points")
    cache = cache_dir or default_cache_dir()
    measured = {PROTOCOL[key]: value for key, value in protocol.items()}
    opts = StudyOptions(model=config.model, backend=config.backend, cache_dir=cache, **measured)
    runner = RunnerSettings(
        python=trial_python or RunnerSettings.python,
        timeout_s=opts.timeout_per_trial,
        cache_dir=cache,
    )
    check_trial_python(runner.python, backend)

    results: list[TrialResult] = []
    # fp32 on this machine: the drop is measured here, as the study measured it there.
    reference = fp32_reference(config.model, opts.eval_limit, runner, cache)
    job = trial_job(opts, config, reference)
    for i in range(rounds):
        result = run_job(job, runner)
        results.append(result)
        tp = result.metrics.get("throughput_samples_per_s")
        say(
            f"round {i + 1}/{rounds}: {result.status}"
            + (f", {tp:,.0f} samples/s" if result.ok and tp else f": {result.message}")
        )

    exported = dict(data["metrics"])
    ref_here = reference.metric_value
    ref_there = exported.get("reference_metric")
    if ref_here is not None and ref_there is not None and abs(ref_here - ref_there) > 1e-12:
        notes.append(
            f"fp32 {metric.get('name', 'metric')} differs: {ref_there:.6g} in the study, "
            f"{ref_here:.6g} here (eval data or fp32 numerics changed)"
        )
    return VerifyReport(
        source=str(path),
        schema=data["schema"],
        config=config.to_dict(),
        provenance=data.get("provenance", {}),
        protocol=protocol,
        rounds=[_round(r, opts.latency_percentile) for r in results],
        exported=exported,
        max_slowdown=max_slowdown,
        max_metric_drop=float(limit),
        metric=metric,
        min_agreement_percent=constraint.get("min_agreement_percent"),
        environment=environment_diff(data.get("provenance", {}), _here(results, reference)),
        notes=notes,
    )


def _round(result: TrialResult, percentile: float) -> dict[str, Any]:
    m = result.metrics
    return {
        "status": str(result.status),
        "message": result.message,
        "throughput_samples_per_s": m.get("throughput_samples_per_s"),
        "throughput_iqr": m.get("throughput_iqr"),
        "latency_ms": m.get(percentile_key(percentile)),  # the study's percentile
        **{k: m.get(k) for k in ACCURACY_KEYS},
    }


def _here(results: list[TrialResult], reference: TrialResult) -> dict[str, Any]:
    """This machine's environment as the trial process reports it (a measured round's first)."""
    for r in results:
        if r.environment:
            return r.environment
    return reference.environment


def environment_diff(provenance: dict[str, Any], here: dict[str, Any]) -> list[dict[str, Any]]:
    """Versions, device, host and threads: where the export was measured vs here. Unknown
    on one side (an older export) is shown as None, not as a change."""
    there_versions = provenance.get("versions") or {}
    here_versions = here.get("versions") or {}
    rows = [
        ("host", provenance.get("host"), here.get("hostname")),
        ("device", provenance.get("device"), here.get("device")),
        ("threads", provenance.get("threads"), here.get("threads")),
        ("cpu_count", provenance.get("cpu_count"), here.get("cpu_count")),
    ]
    for name in sorted(set(there_versions) | set(here_versions)):
        rows.append((name, there_versions.get(name), here_versions.get(name)))
    return [
        {
            "what": what,
            "exported": there,
            "here": now,
            "changed": there is not None and now is not None and there != now,
        }
        for what, there, now in rows
    ]


def render_text(report: VerifyReport) -> str:
    """The comparison as a terminal table (stdout)."""
    prov = report.provenance
    ratio = report.ratios()
    exp = report.exported
    lines = [
        f"verify {report.source}: {report.config['model']} on {report.config['backend']}, "
        f"{config_label(report.config)}",
        f"  exported from study {prov.get('study', '?')!r} trial {prov.get('trial', '?')} "
        f"(schema {report.schema}); {len(report.rounds)} round(s) here, measure "
        f"{report.protocol['measure_seconds']:g} s, eval "
        f"{report.protocol['eval_limit'] or 'all'} samples",
        "",
    ]
    measured = exp.get("throughput_measurements") or [exp["throughput_samples_per_s"]]
    here_tps = [r["throughput_samples_per_s"] for r in report.ok_rounds]
    rows = [
        [
            "throughput (samples/s)",
            f"{exp['throughput_samples_per_s']:,.0f} ({_span(measured, 'measurement')})",
            f"{report.replay_throughput:,.0f} ({_span(here_tps, 'round')})" if here_tps else "-",
            (
                f"{ratio['median']:.2f}x (rounds {ratio['rounds_min']:.2f}-"
                f"{ratio['rounds_max']:.2f}, export {ratio['export_min']:.2f}-"
                f"{ratio['export_max']:.2f})"
                if ratio
                else "-"
            ),
            f">= {1 - report.max_slowdown:.2f}x",
        ],
        _acc_row(report, "top-1 (%)", "accuracy", 100, ".2f"),
        _acc_row(
            report,
            drop_label(report.metric),
            "metric_drop",
            1,
            ".4g",
            limit=f"<= {report.max_metric_drop:g}",
        ),
        _acc_row(
            report,
            "agreement (%)",
            "agreement",
            100,
            ".3f",
            limit=""
            if report.min_agreement_percent is None
            else f">= {report.min_agreement_percent:g}",
        ),
        _acc_row(report, "PCC", "pcc", 1, ".6f"),
    ]
    lines.append(format_table(["", "export", "here", "here/export", "limit"], rows))
    lines.append("")
    env_rows = [
        [e["what"], num(e["exported"], ""), num(e["here"], ""), "changed" if e["changed"] else ""]
        for e in report.environment
    ]
    lines.append(format_table(["environment", "export", "here", ""], env_rows))
    for r_i, r in enumerate(report.rounds, 1):
        if r["status"] != "ok":
            lines.append(f"round {r_i}: {r['status']}: {r['message']}")
    lines += [f"note: {n}" for n in report.notes]
    reason = report.failure()
    lines.append("")
    lines.append("result: " + ("PASS" if reason is None else f"FAIL: {reason}"))
    return "\n".join(lines)


def _acc_row(
    report: VerifyReport, label: str, key: str, scale: float, fmt: str, limit: str = ""
) -> list[str]:
    values = [r[key] for r in report.ok_rounds if r.get(key) is not None]
    there = report.exported.get(key)
    here = statistics.median(values) if values else None
    delta = "-" if here is None or there is None else f"{scale * (here - there):+{fmt}}"
    return [
        label,
        num(None if there is None else scale * there, fmt),
        num(None if here is None else scale * here, fmt),
        delta,
        limit,
    ]


def _span(values: list[float], what: str) -> str:
    if len(values) == 1:
        return f"1 {what}"
    return f"{len(values)} {what}s, {min(values):,.0f}-{max(values):,.0f}"
