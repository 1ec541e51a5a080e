"""`autotune report`: one self-contained HTML page about a study, to send to a colleague.

Plain HTML and inline CSS, images as base64 PNG data URIs, no script and no external
resource: the file renders the same offline, in a mail attachment or a CI artifact.
Everything shown comes from the storage through the same readers as `show`, `plot` and
`export`, so the page agrees with them.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.analysis import TrialRow, decide, trial_rows
from autotune.commands import command_line, verify_args
from autotune.fidelity_verdict import study_verdict
from autotune.plots import render, study_labels, study_plot_data
from autotune.records import (
    StudyRecord,
    TrialRecord,
    drop_header,
    read_sensitivity,
    study_record,
)
from autotune.storage import load_study, shown
from autotune.tables import config_label, interval_text, num

if TYPE_CHECKING:
    import optuna

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px;
     border-bottom: 1px solid #ddd; padding-bottom: 3px; }
.sub { color: #666; margin: 0 0 10px; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: #fdf0ef; } tr.pruned td { background: #fff8e6; }
tr.pick td { background: #fffbd6; font-weight: 600; }
.ok { color: #1a7f37; } .bad { color: #b42318; }
code, pre { font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; background: #f6f8fa; }
pre { padding: 8px; overflow-x: auto; white-space: pre-wrap; margin: 4px 0; }
img { max-width: 100%; border: 1px solid #eee; }
.box { border: 1px solid #e3c766; background: #fffbea; padding: 8px 12px; margin: 8px 0; }
.kv th { width: 220px; } details summary { cursor: pointer; color: #555; }
"""


def write_report(storage_url: str, study_name: str, out: Path) -> None:
    out.write_text(build_report(storage_url, study_name), encoding="utf-8")


def build_report(storage_url: str, study_name: str) -> str:
    study = load_study(storage_url, study_name)
    meta = study_record(study)
    rows = trial_rows(study)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    ref_env = meta.reference_environment
    model, backend, device = study_labels(meta)
    plot = study_plot_data(rows, meta)
    decision = decide(rows)
    best = decision.pick if decision is not None else None
    shown_url = shown(storage_url)  # the page is shared: no password
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>autotune report: {_e(study_name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>autotune study <code>{_e(study_name)}</code></h1>",
        f'<p class="sub">{_e(model)} on {_e(backend)} ({_e(device)}); storage '
        f"<code>{_e(shown_url)}</code>; report written "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        _summary(rows, meta),
        _fidelity(study, meta),
        "<h2>Throughput, accuracy and latency</h2>",
        _image(render(plot, "png"), f"Pareto plot of study {study_name}")
        if plot.message is None
        else f'<p class="box">{_e(plot.message)}</p>',
        "<h2>The pick</h2>",
        _pick(best, meta, study_name, shown_url, decision.summary() if decision else "-"),
        "<h2>Failures by reason</h2>",
        _failures(rows),
        "<h2>Trials</h2>",
        _trial_table(rows, frozen, best, meta),
        _sensitivity(storage_url, model),
        "<h2>Study options</h2>",
        _kv(meta.options),
        "<h2>Environment (fp32 reference run)</h2>",
        _environment(ref_env),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _summary(rows: list[TrialRow], meta: StudyRecord) -> str:
    measured = [r for r in rows if r.measured and r.duplicate_of is None]
    feasible = [r for r in measured if r.feasible]
    failed = [r for r in rows if r.state in ("PRUNED", "FAIL")]
    duplicates = [r for r in rows if r.duplicate_of is not None]
    waiting = [r for r in rows if r.state in ("WAITING", "RUNNING")]
    constraint = meta.feasible_text
    if meta.min_agreement is not None:
        constraint += f" and at least {meta.min_agreement:g}% agreement"
    ref = meta.reference_metric
    return (
        f"<p>{len(rows)} trials: {len(measured)} measured ({len(feasible)} feasible), "
        f"{len(duplicates)} repeats of a measured config, {len(failed)} failed or pruned"
        + (f", {len(waiting)} queued or running" if waiting else "")
        + f". Feasible = {_e(constraint)}"
        + (f"; fp32 {meta.metric.get('name', 'metric')} {ref:.6g}" if ref is not None else "")
        + f"; budget {_or_unknown(meta.trials_budget)} trials.</p>"
    )


def _fidelity(study: optuna.Study, meta: StudyRecord) -> str:
    """The math-fidelity verdict (`autotune.fidelity_verdict`), where trials name one."""
    verdict = study_verdict(study, meta)
    if verdict is None:
        return ""
    return f'<p class="box">{_e(verdict.summary())}</p>'


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value


def _pick(best: TrialRow | None, meta: StudyRecord, study: str, url: str, decided: str) -> str:
    if best is None:
        return (
            '<p class="box">No feasible trial: nothing to export (no measured trial within '
            f"{_e(meta.feasible_text)}).</p>"
        )
    m = best.metrics
    measurements = [best.throughput, *best.confirmations]
    items = {
        "trial": str(best.number),
        "config": config_label(best.config),
        "answers": best.objective.says,
        "throughput (samples/s)": f"{best.confirmed_throughput:,.0f} (median, pooled; 95% "
        f"interval {interval_text(best)})",
        "decided": decided,
        "measurements (samples/s)": ", ".join(f"{v:,.0f}" for v in measurements)
        + f" (the trial's own, then {len(best.confirmations)} re-measurement(s))",
        meta.drop_label: num(m.get("metric_drop"), ".4g"),
        "agreement with fp32 (%)": num(_pct(m.get("agreement")), ".3f"),
        "PCC with fp32": num(m.get("pcc"), ".6f"),
        "latency per batch p50 / p95 (ms)": f"{num(m.get('latency_ms_p50'), '.2f')} / "
        f"{num(m.get('latency_ms_p95'), '.2f')}",
        "latency budget": meta.objective.budget_text or "none",
    }
    commands = (
        command_line("export", "--storage", url, "--study", study, "-o", "best.json")
        + "\n"
        + command_line(*verify_args("best.json", meta.model))
        + "   # replay it on another machine or after an upgrade"
    )
    return _kv(items, ordered=True) + f"<p>Export and check it:</p><pre>{_e(commands)}</pre>"


def _failures(rows: list[TrialRow]) -> str:
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:
        if r.state in ("PRUNED", "FAIL"):
            groups[(r.status, r.message or "(no message)")].append(r.number)
    if not groups:
        return "<p>None: every finished trial was measured.</p>"
    body = [
        f"<tr><td>{_e(status)}</td><td>{_e(message)}</td><td class='num'>{len(numbers)}</td>"
        f"<td>{_e(', '.join(map(str, numbers)))}</td></tr>"
        for (status, message), numbers in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ]
    return (
        "<table><tr><th>status</th><th>reason</th><th>trials</th><th>numbers</th></tr>"
        + "".join(body)
        + "</table>"
    )


def _trial_table(
    rows: list[TrialRow],
    frozen: dict[int, optuna.trial.FrozenTrial],
    best: TrialRow | None,
    meta: StudyRecord,
) -> str:
    head = (
        "<tr><th>#</th><th>state</th><th>status</th><th>samples/s</th><th>IQR</th>"
        f"<th>{_e(drop_header(meta.metric))}</th><th>agreement (%)</th><th>feasible</th>"
        "<th>config</th>"
        "<th>reason</th></tr>"
    )
    body = []
    for r in rows:
        css = {"FAIL": "fail", "PRUNED": "pruned"}.get(r.state, "")
        if best is not None and r.number == best.number:
            css = "pick"
        feasible = (
            '<span class="ok">yes</span>'
            if r.feasible
            else '<span class="bad">no</span>'
            if r.measured
            else "-"
        )
        reason = _e(r.message)
        tail = TrialRecord.of(frozen[r.number]).stderr_tail if r.number in frozen else None
        if tail and r.state in ("PRUNED", "FAIL"):
            reason += f"<details><summary>stderr</summary><pre>{_e(tail[-1500:])}</pre></details>"
        body.append(
            f'<tr class="{css}"><td class="num">{r.number}</td><td>{r.state}</td>'
            f"<td>{_e(r.status)}</td><td class='num'>{num(r.throughput, ',.0f')}</td>"
            f"<td class='num'>{num(r.metrics.get('throughput_iqr'), ',.0f')}</td>"
            f"<td class='num'>{num(r.metric_drop, '.3f')}</td>"
            f"<td class='num'>{num(_pct(r.metrics.get('agreement')), '.2f')}</td>"
            f"<td>{feasible}</td><td><code>{_e(config_label(r.config))}</code></td>"
            f"<td>{reason}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _sensitivity(storage_url: str, model: str) -> str:
    """The per-layer chart, when `autotune sensitivity` recorded a pass of this model here
    (and its cache file is on this host)."""
    import io

    import optuna

    from autotune import sensitivity as sens

    try:
        record = optuna.load_study(study_name=sens.study_name(model), storage=storage_url)
    except KeyError:
        return ""
    stored = read_sensitivity(record)
    found = sens.stored_pass(stored) if stored is not None else None
    if found is None or not found.rows:
        return ""
    buf = io.BytesIO()
    sens.draw(sens.plot_data(model, found.rows), buf)
    limit = found.eval_limit
    return (
        "<h2>Layer sensitivity</h2>"
        f"<p>One weight lowered at a time ({_e(found.backend or '?')}, exact tt-metal "
        f"rounding), on {'the first ' + str(limit) if limit else 'all'} eval samples.</p>"
        + _image(buf.getvalue(), f"layer sensitivity of {model}")
    )


def _environment(env: dict[str, Any]) -> str:
    if not env:
        return "<p>Not recorded (the study has not run its fp32 reference yet).</p>"
    items = {k: v for k, v in env.items() if k not in ("versions", "env")}
    items |= {f"version: {k}": v for k, v in env.get("versions", {}).items()}
    items |= {f"env: {k}": v for k, v in env.get("env", {}).items()}
    return _kv(items)


def _kv(items: dict[str, Any], ordered: bool = False) -> str:
    """A two-column table; sorted by key unless `ordered` (the given order reads best)."""
    if not items:
        return "<p>None recorded.</p>"
    pairs = items.items() if ordered else sorted(items.items())
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_text(v))}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{body}</table>'


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
