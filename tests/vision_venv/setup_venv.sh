#!/usr/bin/env bash
# Build (or reuse) the Python 3.11 venv that runs vision trials (`--trial-python`):
# torch 2.14.1 + torchvision 0.29.1 + timm from PyPI, which import together (PyPI's torchvision
# fails beside the main venv's torch 2.13.0+cpu: "operator torchvision::nms does not exist").
# Cached outside the clone; rebuilt when requirements.txt changes. About 5.5 GB.
# On success prints the venv's python on stdout; otherwise exits 1 with the reason on stderr
# and in $venv.unavailable, which the tests' skip message quotes.
# Env: AUTOTUNE_VISION_VENV (venv dir), AUTOTUNE_PY311 (the interpreter to use).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${AUTOTUNE_VISION_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/autotune-ci/vision-py311}"
req="$here/requirements.txt"
stamp="$(sha256sum "$req" | cut -d' ' -f1)"
stamp_file="$venv/.requirements.sha256"
if [[ -x $venv/bin/python && "$(cat "$stamp_file" 2>/dev/null)" == "$stamp" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
unavailable="$venv.unavailable"
fail() {
  echo "setup_venv.sh: $*" >&2
  mkdir -p "$(dirname "$venv")" && echo "$*" >"$unavailable"
  exit 1
}
py="${AUTOTUNE_PY311:-}"
if [[ -z $py ]]; then
  for cand in python3.11 python3; do
    if "$cand" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
      py="$cand"
      break
    fi
  done
fi
[[ -n $py ]] || fail "no Python 3.11+ found; set AUTOTUNE_PY311"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv" >&2 || fail "$py -m venv $venv failed"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2 \
  || fail "pip install -r $req failed (torch 2.14.1 + torchvision 0.29.1 from PyPI)"
"$venv/bin/python" -c 'import torch, torchvision, timm, torchvision.models as m; m.get_model("resnet18", weights=None)' >&2 \
  || fail "torchvision/timm do not import in $venv"
echo "$stamp" >"$stamp_file"  # written last: a half-built venv is never reused
rm -f "$unavailable"
echo "$venv/bin/python"
