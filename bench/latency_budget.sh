#!/usr/bin/env bash
# Benchmark: the README's study, then a latency budget that binds on this machine (half
# the unconstrained pick's p95 latency per batch), its export re-measured by `verify`,
# and the latency objective. Run on a quiet machine from the repo root:
#     bench/latency_budget.sh [WORKDIR]
# Prints each study's wall time, its last lines (the search's end, the convergence line,
# the pick) and verify's verdict; the CPU first.
set -euo pipefail
AT="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/autotune"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK" && cd "$WORK"
lscpu | grep -E 'Model name|^CPU\(s\)' ; lscpu | grep -o -E 'amx_bf16|avx512_bf16|avx2' | sort -u | tr '\n' ' '; echo
run() {  # run NAME ARGS...: a study, timed; its talk in NAME.err, its data in NAME.out
  local name=$1; shift; local start=$SECONDS
  "$AT" "$@" --no-progress > "$name.out" 2> "$name.err" || { tail -3 "$name.err"; exit 1; }
  echo "== autotune $* : $((SECONDS - start)) s"
  grep -E "search had|converged|busy" "$name.err" | tail -3 || true
  grep -E "^pick" "$name.out" || true
}
run free study --model mnist --trials 50
P95=$("$AT" export --study mnist-cpu -o free.json >/dev/null 2>&1; python3 -c "import json; print(json.load(open('free.json'))['metrics']['latency_ms_p95'])")
BUDGET=$(python3 -c "print(f'{$P95 / 2:.3g}')")
echo "unconstrained pick: p95 $P95 ms per batch; budget: $BUDGET ms"
run budget study --model mnist --trials 50 --study mnist-budget --max-latency-ms "$BUDGET"
"$AT" export --study mnist-budget -o budget.json
python3 -c "import json; d=json.load(open('budget.json')); print('budget pick:', d['batch_size'], d['optimization_level'], d['activation_dtype'], d['metrics']['throughput_samples_per_s'], 'samples/s, p95', d['metrics']['latency_ms_p95'], 'ms')"
"$AT" verify budget.json --rounds 3 2>&1 | tail -4
run online study --model mnist --trials 20 --study mnist-online --objective latency
