#!/usr/bin/env bash
# The Tenstorrent "done when" runs on cold caches (fresh XDG_CACHE_HOME and storages), timed:
# the sensitivity pass, a 4-trial --emulate tt study, and a 4-trial TT study through the
# tt-xla stand-in (tests/tt_standin; no card here).
#   bash bench/tt_cold_runs.sh            # from the repository root, with .venv set up
set -u
C=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
export XDG_CACHE_HOME=$W/cache
cd "$W" || exit 1
A=$C/.venv/bin/autotune
printf '#!/bin/sh\nPYTHONPATH="%s/tests/tt_standin${PYTHONPATH:+:$PYTHONPATH}" exec "%s/.venv/bin/python" "$@"\n' \
  "$C" "$C" > tt-python
chmod +x tt-python
lscpu | grep 'Model name'
grep -o -E 'amx_bf16|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
timed() {
  local start end rc
  start=$(date +%s.%N)
  "$@" > out.log 2>&1
  rc=$?
  end=$(date +%s.%N)
  printf '%s\n  rc=%s, %.1f s\n' "${*#"$C"/}" "$rc" "$(echo "$end - $start" | bc)"
}
timed "$A" sensitivity --model mnist -o sens.png
timed "$A" study --model mnist --emulate tt --trials 4 --no-progress --storage sqlite:///emu.db
timed "$A" study --model mnist --backend tt --trial-python "$W/tt-python" --trials 4 \
  --no-progress --storage sqlite:///tt.db
rm -rf "$W"
