#!/usr/bin/env bash
# The GPU check of the cuda backend, prepared for one short lent window (about 15 minutes on
# an NVIDIA H100 or H200, machine start included; one command may run 600 s): this script
# stops itself within GPU_CHECK_BUDGET_S, default 540 s.
#
#   bench/gpu_check.sh --fetch-wheels   on a machine with PyPI: the pure-Python packages the
#                                       GPU image lacks (optuna and its needs) into .gpu_wheels/
#   bench/gpu_check.sh OUTDIR           on the GPU machine (carry .gpu_wheels there)
#
# On the GPU machine, every step under a time limit:
#   1. an interpreter with a CUDA build of torch inside our bound (torch>=2.4,<2.14): the
#      image's python3 when it has one (the lent machines have no network), the packages from
#      .gpu_wheels added with pip --target; else a fresh venv with pip install torch==2.13.0
#      (PyPI's Linux x86_64 wheel is a CUDA build) and the project's test extra (network);
#   2. the GPU tests: pytest -m cuda tests/test_cuda_backend.py tests/test_backend_contract.py;
#   3. a 30-trial MNIST study on cuda (the reference recipe is its first trial, the reference),
#      stopped by its time limit if slower (results.json says how many trials finished);
#   4. the study's pick and the reference recipe re-measured in this run, interleaved;
#   5. OUTDIR/results.json: steps (exit code, seconds), device, versions, the figures.
# OUTDIR gets 8 files: results.json steps.log pytest.log study.log study.db show.json
# export.json remeasure.json. A step that fails or runs out of time is recorded, and the
# later steps still run on what exists (a study stopped early keeps its finished trials).
# GPU_CHECK_DRY_RUN=1 checks the plumbing without a GPU: $GPU_CHECK_PYTHON as it is, the
# cpu backend, 3 trials (the GPU tests skip, and the cpu study has no reference recipe to
# re-measure against).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEELS="$ROOT/.gpu_wheels"
# What optuna needs beyond what the GPU image ships (it has numpy, tqdm, PyYAML, packaging,
# typing-extensions, MarkupSafe, matplotlib, pytest and torch).
PINS=(optuna==5.0.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p "$WHEELS"
  exec timeout 300 python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "${PINS[@]}"
fi
if [[ $# -ne 1 || "$1" == -* ]]; then
  echo "usage: bench/gpu_check.sh OUTDIR | --fetch-wheels" >&2
  exit 2
fi

OUT=$(mkdir -p "$1" && cd "$1" && pwd)
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
TRIALS=${GPU_CHECK_TRIALS:-30}
BACKEND=cuda
if [[ -n "${GPU_CHECK_DRY_RUN:-}" ]]; then
  BACKEND=cpu TRIALS=3
fi
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
CACHE="$WORK/cache"  # compile caches: shared by the study and the re-measurement
STEPS="$WORK/steps.tsv"
LOG="$OUT/steps.log"
START=$SECONDS
: >"$STEPS"
: >"$LOG"
cd "$ROOT" || exit 2
export PYTHONUNBUFFERED=1

log() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }
# step NAME LIMIT_S OUTFILE CMD...: run CMD under a time limit, output to OUTFILE, record it.
step() {
  local name=$1 limit=$2 out=$3 t0=$SECONDS rc
  shift 3
  ((limit < 10)) && limit=10
  log "$name: start (limit ${limit}s)"
  timeout -k 15 "$limit" "$@" >>"$out" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$STEPS"
  log "$name: exit $rc after $((SECONDS - t0))s"
  return $rc
}
min() { (($1 < $2)) && echo "$1" || echo "$2"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || true; } \
  | tee -a "$LOG"

# 1. The interpreter.
PY=${GPU_CHECK_PYTHON:-python3}
CUDA_TORCH_OK='
import sys, torch
v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())
sys.exit(0 if torch.version.cuda and torch.cuda.is_available() and (2, 4) <= v < (2, 14) else 1)
'
if [[ -n "${GPU_CHECK_DRY_RUN:-}" ]]; then
  log "dry run: $PY as it is, backend $BACKEND"
  export PYTHONPATH="$ROOT"
elif step probe-torch 120 "$LOG" "$PY" -c "$CUDA_TORCH_OK"; then
  SITE="$WORK/site"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    step install-wheels 90 "$LOG" "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --target "$SITE" "$WHEELS"/*.whl
  else
    step install-pypi 180 "$LOG" "$PY" -m pip install -q --no-deps --target "$SITE" "${PINS[@]}"
  fi
  export PYTHONPATH="$SITE:$ROOT"
else
  log "no CUDA torch within torch>=2.4,<2.14 in $PY: a fresh venv with torch==2.13.0"
  step venv 60 "$LOG" "$PY" -m venv "$WORK/venv"
  PY="$WORK/venv/bin/python"
  step install-torch "$(min 420 $(($(left) - 300)))" "$LOG" \
    "$PY" -m pip install -q torch==2.13.0
  step install-project 180 "$LOG" "$PY" -m pip install -q -e "${ROOT}[test]"
  export PYTHONPATH="$ROOT"
fi
step check-imports 120 "$LOG" "$PY" -c \
  'import torch, optuna, sqlalchemy, matplotlib, numpy, yaml, tqdm, pytest, autotune.backends.cuda'

# 2. The GPU tests.
step pytest-cuda "$(min 120 $(($(left) - 300)))" "$OUT/pytest.log" \
  "$PY" -m pytest -m cuda tests/test_cuda_backend.py tests/test_backend_contract.py -q -rs -p no:cacheprovider

# 3. The study (stopped by the time limit, it keeps its finished trials; exit 130).
STORAGE="sqlite:///$OUT/study.db"
step study "$(min 420 $(($(left) - 140)))" "$OUT/study.log" \
  "$PY" -m autotune study --model mnist --backend "$BACKEND" --trials "$TRIALS" --seed 0 \
  --storage "$STORAGE" --measure-seconds 0.4 --eval-limit 2000 --timeout-per-trial 120 \
  --confirm 2 --no-progress --cache-dir "$CACHE"
step show 30 "$OUT/show.json" "$PY" -m autotune show --study mnist-$BACKEND --storage "$STORAGE" \
  --format json
step export 30 "$LOG" "$PY" -m autotune export --study mnist-$BACKEND --storage "$STORAGE" \
  -o "$OUT/export.json"

# 4. Pick and reference recipe, re-measured in this run, interleaved.
step remeasure "$(min 180 $(($(left) - 10)))" "$LOG" "$PY" bench/remeasure.py \
  --storage "$STORAGE" --study mnist-$BACKEND --repeats 3 --timeout 120 --cache-dir "$CACHE" \
  --json "$OUT/remeasure.json"

# 5. results.json.
"$PY" - "$OUT" "$STEPS" "$BUDGET_S" <<'EOF' 2>&1 | tee -a "$LOG"
import json, subprocess, sys
from pathlib import Path

out, steps_file, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None

steps = []
for line in steps_file.read_text().splitlines():
    name, rc, seconds, limit = line.split("\t")
    steps.append({"step": name, "exit": int(rc), "seconds": int(seconds), "limit_s": int(limit)})
show, export, remeasure = load("show.json"), load("export.json"), load("remeasure.json")
pytest_tail = (out / "pytest.log").read_text().strip().splitlines()[-1:] if (out / "pytest.log").exists() else []
try:
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20,
    ).stdout.strip()
except Exception as exc:
    smi = f"nvidia-smi failed: {exc}"
try:
    import torch

    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
except ImportError:
    versions = {}
statuses = {}
for t in (show or {}).get("trials", []):
    statuses[t.get("status")] = statuses.get(t.get("status"), 0) + 1
results = {
    "budget_s": budget,
    "seconds": sum(s["seconds"] for s in steps),
    "steps": steps,
    "nvidia_smi": smi,
    "versions": versions,
    "device": (export or {}).get("provenance", {}).get("device"),
    "pytest": pytest_tail,
    "study": {
        "trials": len((show or {}).get("trials", [])),
        "statuses": statuses,
        "pick": export and {k: export.get(k) for k in ("batch_size", "optimization_level", "enable_trace", "activation_dtype", "weight_dtype_overrides", "backend_options", "metrics")},
        "reference": export and export.get("reference"),
    },
    "remeasured": remeasure and {
        "median_samples_per_s": remeasure.get("median_samples_per_s"),
        "speedup_pick_vs_reference": remeasure.get("speedup_pick_vs_reference"),
        "device": remeasure.get("device"),
    },
}
(out / "results.json").write_text(json.dumps(results, indent=1))
print(json.dumps({k: results[k] for k in ("seconds", "device", "pytest", "remeasured")}, indent=1))
EOF
log "done: $OUT"
rm -rf "$WORK"
