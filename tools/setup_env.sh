#!/usr/bin/env bash
# Create or refresh the project's virtual environment (called by `make env`/`make test`).
#
#   tools/setup_env.sh            # .venv at the repo root
#
# Environment knobs:
#   PYTHON             interpreter used to create the venv (default: python3)
#   MMSSM_VENV         venv location (default: <repo>/.venv; relative paths are taken
#                      from the repo root)
#   MMSSM_WHEEL_CACHE  where the built mmcv wheel is kept (default: <repo>/.cache/wheels)
#   MAX_JOBS           parallel compile jobs for the mmcv build (default: 2)
#   FORCE_CUDA, TORCH_CUDA_ARCH_LIST   passed through to the mmcv build (CUDA torch only)
#
# Three stamps in the venv make a warm run skip everything (no pip, no compiler):
#   .mmssm-env.sha256  requirements/*.txt, this script, the Python version -> pip installs
#   .mmssm-dev.sha256  setup.py & co. + the build toolchain pins -> `pip install -e .`
#   .mmssm-ext.sha256  the above + C/C++/CUDA sources -> incremental `build_ext --inplace`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${MMSSM_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
WHEEL_CACHE="${MMSSM_WHEEL_CACHE:-$ROOT/.cache/wheels}"
case "$WHEEL_CACHE" in /*) ;; *) WHEEL_CACHE="$ROOT/$WHEEL_CACHE" ;; esac
REQ="$ROOT/requirements"
MMCV_VERSION=2.1.0
TORCH_VERSION=2.13.0

log() { printf '[setup_env] %s\n' "$*" >&2; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

hash_files() {  # sha256 over the names and contents of the given files (missing ones skipped)
    local f
    for f in "$@"; do
        [ -f "$f" ] && { printf '%s\n' "${f#"$ROOT"/}"; cat "$f"; }
    done | sha256sum | cut -d' ' -f1
}
hash_text() { sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- hashes and stamps
command -v "$PYTHON" >/dev/null || die "interpreter '$PYTHON' not found (set PYTHON=...)"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
ENV_HASH="$( { printf 'python %s\n' "$PY_VERSION"
               hash_files "$REQ"/*.txt "$ROOT/tools/setup_env.sh"; } | hash_text)"
# The compiled extension depends on the interpreter and the toolchain pins (torch ABI),
# not on the rest of the environment.
BUILD_HASH="$( { printf 'python %s\n' "$PY_VERSION"
                 hash_files "$REQ/build.txt" "$REQ/constraints.txt"; } | hash_text)"

have_project() { [ -f "$ROOT/setup.py" ] || [ -f "$ROOT/pyproject.toml" ]; }
meta_hash() {    # what `pip install -e .` depends on
    { printf '%s\n' "$BUILD_HASH"
      hash_files "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" \
                 "$ROOT/MANIFEST.in" "$ROOT/mmssm/version.py"; } | hash_text
}
ext_hash() {     # ... plus the C/C++/CUDA sources of the extension
    local files
    mapfile -t files < <(find "$ROOT/csrc" "$ROOT/mmssm" -type f \
        \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \
           -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | LC_ALL=C sort)
    { meta_hash; hash_files "${files[@]}"; } | hash_text
}

ENV_STAMP="$VENV/.mmssm-env.sha256"
DEV_STAMP="$VENV/.mmssm-dev.sha256"
EXT_STAMP="$VENV/.mmssm-ext.sha256"
stamp_is() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
env_ok() { [ -x "$VENV/bin/python" ] && stamp_is "$ENV_STAMP" "$ENV_HASH"; }
dev_ok() { ! have_project || stamp_is "$DEV_STAMP" "$(meta_hash)"; }
ext_ok() { ! have_project || stamp_is "$EXT_STAMP" "$(ext_hash)"; }

if env_ok && dev_ok && ext_ok; then
    exit 0          # warm: nothing to do, pip is not touched
fi

# ---------------------------------------------------------------- one setup at a time
mkdir -p "$VENV" "$WHEEL_CACHE"
if command -v flock >/dev/null; then
    exec 9>"$WHEEL_CACHE/.setup.lock"
    flock 9
fi

# Every pip call below is constrained: nothing may move torch off 2.13.0 or setuptools
# to >=82, whatever a dependency asks for.
export PIP_CONSTRAINT="$REQ/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || { log "creating venv $VENV ($PYTHON $PY_VERSION)"; "$PYTHON" -m venv "$VENV"; }
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install -q "$@"; }

# ---------------------------------------------------------------- 1. pinned stack
if ! env_ok; then
    t0=$SECONDS
    log "installing build tools and torch==$TORCH_VERSION (requirements/build.txt)"
    pip_install -r "$REQ/build.txt"
    TORCH_FULL="$("$VPY" -c 'import torch; print(torch.__version__)')"
    [ "${TORCH_FULL%%+*}" = "$TORCH_VERSION" ] \
        || die "torch $TORCH_FULL installed, but this project needs torch==$TORCH_VERSION"

    # mmcv has no wheel for this torch: build it once per (torch build, python) and keep it.
    PYTAG="cp$("$VPY" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
    MMCV_DIR="$WHEEL_CACHE/torch-$TORCH_FULL"
    mkdir -p "$MMCV_DIR"
    shopt -s nullglob
    wheels=("$MMCV_DIR"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        tmp="$(mktemp -d "$MMCV_DIR/build.XXXXXX")"
        t_mmcv=$SECONDS
        log "building mmcv==$MMCV_VERSION with ops from source against torch $TORCH_FULL"
        log "  (~10-30 min on 2 cores, done once; log: $MMCV_DIR/build.log)"
        # Python's own CFLAGS (-DNDEBUG -O3 ...) plus -g0: the debug info it would add
        # otherwise more than doubles the compile time of mmcv's torch-heavy sources.
        # CFLAGS from the caller win. --no-cache-dir: pip's own wheel cache is keyed on the
        # sdist, not on torch, and would hand back a wheel built against another torch.
        MMCV_CFLAGS="${CFLAGS:-$("$VPY" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")') -g0}"
        if ! CFLAGS="$MMCV_CFLAGS" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
                "$VPY" -m pip wheel -v --no-deps --no-build-isolation --no-cache-dir \
                "mmcv==$MMCV_VERSION" -w "$tmp" >"$MMCV_DIR/build.log" 2>&1; then
            tail -n 40 "$MMCV_DIR/build.log" >&2
            rm -rf "$tmp"
            die "mmcv build failed (full log: $MMCV_DIR/build.log)"
        fi
        mv "$tmp"/mmcv-"$MMCV_VERSION"-*.whl "$MMCV_DIR"/
        rm -rf "$tmp"
        log "mmcv built in $((SECONDS - t_mmcv))s"
    fi
    shopt -u nullglob

    log "installing runtime, OpenMMLab, deployment and test requirements"
    pip_install --find-links "$MMCV_DIR" --only-binary mmcv \
        -r "$REQ/runtime.txt" -r "$REQ/openmmlab.txt" -r "$REQ/deploy.txt" -r "$REQ/tests.txt"
    "$VPY" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain' \
        || die "the installed OpenMMLab stack does not import (see the error above)"
    printf '%s\n' "$ENV_HASH" >"$ENV_STAMP"
    log "environment ready in $((SECONDS - t0))s"
fi

# ---------------------------------------------------------------- 2. mmssm itself
if ! have_project; then
    log "no setup.py/pyproject.toml yet: tests import mmssm from the source tree"
elif ! dev_ok; then
    t0=$SECONDS
    log "installing mmssm in editable mode (compiles its extension)"
    # --use-pep517: without it pip 23 runs the legacy `setup.py develop`, which setuptools
    # >=80 turns into a nested `pip install -e .` *with* build isolation (no torch there).
    pip_install --no-build-isolation --use-pep517 -e "$ROOT"
    meta_hash >"$DEV_STAMP"
    ext_hash >"$EXT_STAMP"
    log "mmssm installed in $((SECONDS - t0))s"
elif ! ext_ok; then
    t0=$SECONDS
    BUILD_LOG="$VENV/.mmssm-ext-build.log"
    log "C/C++/CUDA sources changed: rebuilding mmssm's extension in place (incremental)"
    if ! "$VPY" setup.py build_ext --inplace >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        die "extension build failed (full log: $BUILD_LOG)"
    fi
    ext_hash >"$EXT_STAMP"
    log "extension rebuilt in $((SECONDS - t0))s"
fi
