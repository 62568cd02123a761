#!/usr/bin/env bash
# Regenerates the CPU tables of docs/benchmarks.md (issue 16) in one go:
#   1. the selective-scan kernel per state update (benchmark_scan.py), optionally against
#      another build of mmssm._C in the same process (the "before" column);
#   2. the backbones against mmpretrain's at 224 and 512, growth to 896, a training step
#      (batch 2), 1 vs 2 threads and each model alone with glibc's default vs the steady
#      heap policy (benchmark_backbone.py --peers).
# Single-thread numbers are CPU time of the process (--timer process): on a shared machine
# they measure the work, not the queue; the thread scaling is wall time by nature.
#
# Usage: tools/analysis_tools/cpu_report.sh OUT_DIR [BASELINE_C_SO]
#   OUT_DIR        where scan.md / backbones.md (+ .json) are written
#   BASELINE_C_SO  optional: a mmssm/_C*.so built from another commit
# Environment: PYTHON (default: python), ITERS (default 5), ROUNDS (with a baseline:
# alternated rounds per scan shape, default 15).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: $0 OUT_DIR [BASELINE_C_SO]}
BASELINE=${2:-}
PY=${PYTHON:-python}
ITERS=${ITERS:-5}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
scan_args=(--threads 1 --timer process --backends cpu --markdown "$OUT/scan.md"
           --json "$OUT/scan.json")
if [ -n "$BASELINE" ]; then
  # --rounds: the two builds also alternated per shape (the table's rows are timed one
  # after the other; on a noisy machine read the alternated ratios)
  scan_args+=(--cpu-baseline "$BASELINE" --rounds "${ROUNDS:-15}")
fi
rm -f "$OUT/scan.md"
"$PY" tools/analysis_tools/benchmark_scan.py "${scan_args[@]}"
"$PY" tools/analysis_tools/benchmark_backbone.py --peers --threads 1 --timer process \
    --iters "$ITERS" --warmup 1 --markdown "$OUT/backbones.md" --json "$OUT/backbones.json" \
    --heap-models vmamba:tiny_s1l8 msvmamba:tiny efficientvmamba:tiny mobilemamba:b1 \
    vim:tiny swin-t
echo "# done, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
