#!/usr/bin/env bash
# Wall time of the default pipeline from scratch, stage by stage, in a temporary copy of the
# checkout (your own outputs, DVC cache and MLflow store are untouched): every stage that
# `dvc repro -f` runs, so the total is its wall time less DVC's start-up between stages.
#   bench/pipeline_walltime.sh            # uses .venv (run `make setup` first)
#   KEEP_METRICS=/tmp/m bench/pipeline_walltime.sh   # also keep the run's metrics/ there
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/.venv/bin:$PATH" CI=true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$root" && xargs -0 cp --parents -t "$work" 2>/dev/null || true)
rm -f "$work/dvc.lock"
cd "$work" && git init -q
printf '%-10s %8s\n' stage seconds
total=0
for stage in download@synthface align train evaluate export leaderboard; do
  start=$(date +%s%N)
  dvc repro -s "$stage" >"$work/$stage.log" 2>&1 || { cat "$work/$stage.log"; exit 1; }
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  total=$(( total + ms ))
  printf '%-10s %5d.%d\n' "$stage" $(( ms / 1000 )) $(( ms % 1000 / 100 ))
done
printf '%-10s %5d.%d\n' total $(( total / 1000 )) $(( total % 1000 / 100 ))
if [ -n "${KEEP_METRICS:-}" ]; then mkdir -p "$KEEP_METRICS" && cp -r metrics/. "$KEEP_METRICS"; fi
arcflow summary  # headline numbers of the run, as `make run` ends
