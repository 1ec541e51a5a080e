#!/usr/bin/env bash
# Build (or reuse) the Python 3.12 venv holding PyPI's `ttnn` for tests/test_ttnn_packer.py.
# Cached outside the clone; rebuilt when requirements.txt changes. No torch goes in.
# On success prints the venv's python on stdout; otherwise exits 1 with the reason on stderr
# and in $venv.unavailable, which the test's skip message quotes.
# Env: AUTOTUNE_TTNN_VENV (venv dir), AUTOTUNE_PY312 (the 3.12 interpreter to use).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${AUTOTUNE_TTNN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/autotune-ci/ttnn-py312}"
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
py="${AUTOTUNE_PY312:-}"
if [[ -z $py ]]; then
  for cand in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python; do
    if "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      py="$cand"
      break
    fi
  done
fi
[[ -n $py ]] || fail "no Python 3.12 found (ttnn ships cp312 wheels only); set AUTOTUNE_PY312"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv" >&2 || fail "$py -m venv $venv failed"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2 \
  || fail "pip install -r $req failed"
if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  fail "torch was installed into $venv; it must stay out (multi-GB CUDA build)"
fi
"$venv/bin/python" "$here/pack.py" --probe >&2 || fail "ttnn does not start in $venv"
echo "$stamp" >"$stamp_file"  # written last: a half-built venv is never reused
rm -f "$unavailable"
echo "$venv/bin/python"
