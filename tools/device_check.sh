#!/usr/bin/env bash
# The one GPU run that proves and measures mmssm's CUDA path (`make device-check`).
#
# On a bare GPU machine (CUDA torch, nvcc, ninja; no mmcv/mmdet/mmseg/mmpretrain, no
# network) it runs, in about 8 minutes, one step after the other:
#
#   env        GPU, driver, torch / CUDA / triton / nvcc versions, cores, commit
#   wheels     installs the carried pure-Python wheels (.device/wheels: mmengine & co.)
#   build      mmssm._C and mmssm._C_cuda in place (ninja, all cores, this GPU's arch)
#   tests      pytest -m cuda on tests/ops and tests/models (CUDA vs float64 reference and
#              vs the CPU kernel, Triton gather/merge, AMP)
#   harness    the kernels' own standalone harness (csrc/selective_scan/cuda/tests), torch-
#              free: every tier, dtype and option against a float64 reference
#   scan       benchmark_scan.py --device cuda, float32 / float16 / bfloat16: time,
#              achieved bandwidth, time over the HBM floor (measured copy bandwidth)
#   backbone-* benchmark_backbone.py --device cuda, every family, default vs torch path,
#              fp32 and AMP: 224 batch 128 inference, 800x1333 batch 2 training,
#              224 batch 64 training, 800x1333 batch 2 inference (img/s, peak memory)
#   official   only with a prepared official VMamba copy (.device/official, see --prepare):
#              builds its selective_scan kernel and times VMamba-T[s1l8] official vs mmssm
#              on the same weights (tools/official_vmamba_compare.py)
#
# and writes $OUT/device_check.md (the report), $OUT/device_check.json (every figure) and
# $OUT/device_check.log (every step's output). A failing or overrunning step is recorded
# and the next one runs; the exit status is 1 if any step failed, else 0.
#
# Usage:
#   tools/device_check.sh --prepare [--official /path/to/VMamba]   # here, with network
#   tools/device_check.sh                                          # on the GPU machine
#   tools/device_check.sh --dry-run                                # print the steps only
# Options:
#   --out DIR        report directory (default: $OUT, else <repo>/device_check_out)
#   --budget S       seconds for all steps together (default 450); every step also has its
#                    own cap; a step that would start with less than 20 s left is skipped
#   --steps a,b      run only these steps (names as above; env always runs)
#   --official DIR   with --prepare: copy the official VMamba checkout's kernels/ and
#                    classification/models/ into .device/official (never committed)
#
# The device tool call (docs/benchmarks.md, "GPU device check"), after `make device-wheels`:
#   run(command="bash tools/device_check.sh", carry=[".device"], timeout_s=600)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEVICE_DIR="$ROOT/.device"
MODE=run
OUT_DIR="${OUT:-$ROOT/device_check_out}"
BUDGET=450
ONLY=""
OFFICIAL_SRC=""

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=dry ;;
        --prepare) MODE=prepare ;;
        --out) OUT_DIR="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        --steps) ONLY="$2"; shift ;;
        --official) OFFICIAL_SRC="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "device_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "device_check: --budget takes whole seconds" >&2; exit 2 ;; esac

# ------------------------------------------------------------------ prepare (here)
if [ "$MODE" = prepare ]; then
    set -e
    rm -rf "$DEVICE_DIR/wheels"
    mkdir -p "$DEVICE_DIR/wheels"
    # requirements/device.txt less what the GPU image already has (its package list:
    # rich and its dependencies, pyyaml, packaging); carrying those would shadow the
    # image's own versions for torch, triton and pytest.
    mapfile -t reqs < <(sed 's/#.*//; s/[[:space:]]*$//' requirements/device.txt | grep . \
        | grep -viE '^(rich|markdown-it-py|mdurl|pygments|pyyaml|packaging)([^a-z0-9_.-]|$)')
    # The GPU image's python3 is CPython 3.12 on x86-64.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$DEVICE_DIR/wheels" "${reqs[@]}" \
        2>&1 | grep -v '^WARNING: Location' || true
    n=$(find "$DEVICE_DIR/wheels" -name '*.whl' | wc -l)
    want=${#reqs[@]}
    [ "$n" -eq "$want" ] || { echo "device_check: $n wheels for $want requirements" >&2; exit 1; }
    { git rev-parse HEAD
      git status --porcelain --untracked-files=no | grep -q . && echo '(with uncommitted changes)'
    } >"$DEVICE_DIR/COMMIT" 2>/dev/null || true
    if [ -n "$OFFICIAL_SRC" ]; then
        for sub in kernels/selective_scan classification/models; do
            [ -d "$OFFICIAL_SRC/$sub" ] || { echo "device_check: $OFFICIAL_SRC/$sub not found (expected a checkout of the official VMamba repository)" >&2; exit 1; }
        done
        rm -rf "$DEVICE_DIR/official"
        mkdir -p "$DEVICE_DIR/official/VMamba"
        for sub in kernels/selective_scan classification/models; do
            mkdir -p "$DEVICE_DIR/official/VMamba/$(dirname "$sub")"
            cp -r "$OFFICIAL_SRC/$sub" "$DEVICE_DIR/official/VMamba/$sub"
        done
        find "$DEVICE_DIR/official" \( -name .git -o -name build -o -name '*.so' -o -name __pycache__ \) \
            -prune -exec rm -rf {} +
        (cd "$OFFICIAL_SRC" && git rev-parse HEAD 2>/dev/null) >"$DEVICE_DIR/official/COMMIT" || true
        # vmamba.py imports fvcore.nn at module level; fvcore and iopath ship only sdists
        # (pure Python), so wheels are built here. The GPU image has timm, einops, triton,
        # tabulate, portalocker, tqdm and pyyaml.
        python3 -m pip wheel -q --no-deps -w "$DEVICE_DIR/official/wheels" fvcore iopath yacs \
            2>&1 | grep -v '^WARNING: Location' || true
        [ "$(find "$DEVICE_DIR/official/wheels" -name '*.whl' | wc -l)" -eq 3 ] \
            || { echo "device_check: could not build the fvcore/iopath/yacs wheels" >&2; exit 1; }
    fi
    echo "prepared $DEVICE_DIR: $n wheels$( [ -d "$DEVICE_DIR/official" ] && echo ', official VMamba copy'), $(du -sh "$DEVICE_DIR" | cut -f1)"
    echo "travels: $(git ls-files -z | du -ch --files0-from=- 2>/dev/null | tail -n 1 | cut -f1) tracked + .device (limit 64 MiB)"
    echo 'then, on a GPU machine: run(command="bash tools/device_check.sh", carry=[".device"], timeout_s=600)'
    exit 0
fi

# ------------------------------------------------------------------ the steps
PY="${MMSSM_DEVICE_PYTHON:-python3}"  # the GPU image's python3 holds torch
SITE=/tmp/mmssm-device-site
WORK="${TMPDIR:-/tmp}/mmssm-device-check"
# every registered family (benchmark_backbone.py's default --models), default preset
BENCH_BB=(tools/analysis_tools/benchmark_backbone.py --device cuda --precisions amp fp32
          --warmup 3 --iters 10 --torch-warmup 0 --torch-iters 1 --paths default torch)
# name | cap in seconds | command (run with bash -c, from the repo root)
STEPS=(
"env|20|$PY tools/device_report.py --environment"
"wheels|30|$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .device/wheels/*.whl && $PY -c 'import mmengine; print(mmengine.__version__)'"
"build|120|arch=\$($PY tools/device_report.py --arch) && TORCH_CUDA_ARCH_LIST=\$arch MAX_JOBS=\$(nproc) $PY setup.py build_ext --inplace && $PY tools/device_report.py --check-build"
"tests|120|$PY -m pytest -m cuda tests/ops tests/models -q -p no:cacheprovider -rfE"
"harness|60|arch=\$($PY tools/device_report.py --arch) && nvcc -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr -arch=sm_\${arch/./} -I csrc/selective_scan csrc/selective_scan/cuda/*.cu csrc/selective_scan/cuda/tests/scan_harness.cu -o $WORK/scan_harness && $WORK/scan_harness --quick"
"scan|80|rc=0; for dt in float32 float16 bfloat16; do $PY tools/analysis_tools/benchmark_scan.py --device cuda --dtype \$dt --measure-bandwidth --budget 0.2 --json $WORK/scan_\$dt.json --markdown $WORK/scan.md || rc=1; done; exit \$rc"
"backbone-224-infer|60|$PY ${BENCH_BB[*]} --sizes 224 --batch 128 --modes infer --title '224x224, batch 128, inference' --json $WORK/backbone-224-infer.json --markdown $WORK/backbone-224-infer.md"
"backbone-800x1333-train|100|$PY ${BENCH_BB[*]} --sizes 800x1333 --batch 2 --modes train --title '800x1333, batch 2, training step' --json $WORK/backbone-800x1333-train.json --markdown $WORK/backbone-800x1333-train.md"
"backbone-224-train|60|$PY ${BENCH_BB[*]} --sizes 224 --batch 64 --modes train --title '224x224, batch 64, training step' --json $WORK/backbone-224-train.json --markdown $WORK/backbone-224-train.md"
"backbone-800x1333-infer|50|$PY ${BENCH_BB[*]} --sizes 800x1333 --batch 2 --modes infer --title '800x1333, batch 2, inference' --json $WORK/backbone-800x1333-infer.json --markdown $WORK/backbone-800x1333-infer.md"
)
if [ -d "$DEVICE_DIR/official/VMamba" ] || [ "$MODE" = dry ]; then
    STEPS+=("official|240|$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .device/official/wheels/*.whl && $PY tools/official_vmamba_compare.py --official .device/official/VMamba --build --json $WORK/official.json --markdown $WORK/official.md")
fi

wanted() {  # is step $1 selected by --steps?
    [ -z "$ONLY" ] || [ "$1" = env ] || [[ ",$ONLY," == *",$1,"* ]]
}

if [ "$MODE" = dry ]; then
    echo "device_check --dry-run: budget ${BUDGET} s, report in $OUT_DIR/device_check.md"
    echo "environment: PYTHONPATH=$SITE:$ROOT PYTHONUNBUFFERED=1; work files in $WORK"
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name cap cmd <<<"$entry"
        wanted "$name" || continue
        [ "$name" = official ] && name="official (only with .device/official)"
        printf 'step %s (cap %s s): %s\n' "$name" "$cap" "$cmd"
    done
    exit 0
fi

mkdir -p "$OUT_DIR" "$WORK"
rm -f "$WORK"/*.json "$WORK"/*.md "$WORK"/*.xml "$WORK"/steps.tsv
LOG="$OUT_DIR/device_check.log"
: >"$LOG"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
START=$SECONDS
FAILED=0
for entry in "${STEPS[@]}"; do
    IFS='|' read -r name cap cmd <<<"$entry"
    wanted "$name" || continue
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        printf '%s\tskipped\t0\tbudget of %s s spent\n' "$name" "$BUDGET" >>"$WORK/steps.tsv"
        echo "== $name: skipped (budget spent)" | tee -a "$LOG"
        FAILED=1
        continue
    fi
    [ "$cap" -le "$left" ] || cap=$left
    echo "== $name (cap $cap s): $cmd" | tee -a "$LOG"
    t=$SECONDS
    timeout -k 10 "$cap" bash -c "$cmd" >"$WORK/$name.out" 2>&1
    rc=$?
    took=$((SECONDS - t))
    cat "$WORK/$name.out" >>"$LOG"
    tail -n 5 "$WORK/$name.out"
    if [ $rc -eq 0 ]; then
        status=ok
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        status="timed out"; FAILED=1
    else
        status="failed (exit $rc)"; FAILED=1
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$cmd" >>"$WORK/steps.tsv"
    echo "== $name: $status in $took s" | tee -a "$LOG"
done

$PY tools/device_report.py --work "$WORK" --out "$OUT_DIR" --budget "$BUDGET" \
    --total "$((SECONDS - START))" || { echo "device_check: the report could not be written" >&2; FAILED=1; }
echo "device_check: report $OUT_DIR/device_check.md ($((SECONDS - START)) s)"
exit $FAILED
