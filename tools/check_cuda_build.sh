#!/usr/bin/env bash
# Build proof of the CUDA backend without a GPU (`make check-cuda-build`).
#
# Builds mmssm._C_cuda against the CUDA build of the pinned torch (2.13.0, cu130 on
# manylinux x86-64) in a separate, cached virtual environment, links it, imports it and
# checks that calling it on a machine without a GPU raises the "no CUDA device" error.
# The project's own .venv (CPU torch) is never touched.
#
#   tools/check_cuda_build.sh            # or: make check-cuda-build
#
# Steps (each timed; a warm run redoes only the cheap ones):
#   1. torch wheel   pip download 'torch===2.13.0' into the cache. '===' (PEP 440 arbitrary
#                    equality) matches the plain release only, never the local CPU build
#                    '2.13.0+cpu' that this machine's pip configuration offers first.
#   2. venv          python3 -m venv; the torch wheel with --no-deps, then only what
#                    `import torch`, the build and `import mmssm` need: torch's own
#                    requirements less triton and cuda-bindings (`import torch` imports
#                    neither; ~0.7 GB installed), requirements/build.txt, and
#                    requirements/device.txt with --no-deps (mmengine without opencv and
#                    matplotlib, ~0.3 GB). Every pip call is constrained by
#                    requirements/constraints.txt.
#   3. build         `setup.py build` out of tree (.cache/cuda-build), so the in-place CPU
#                    build of .venv is left alone; ninja, MAX_JOBS jobs, incremental.
#                    mmssm._C and mmssm._C_cuda are built; the ONNX Runtime operator
#                    library is not (MMSSM_WITH_ORT=0 unless set): it includes no torch
#                    header, so it builds the same against any torch, and `make env`
#                    builds it already (here it would double the build's CPU time).
#   4. checks        import mmssm._C_cuda (all symbols resolve: extensions load RTLD_NOW),
#                    the 'cuda' backend loads, fwd/bwd and selective_scan(backend='cuda')
#                    raise the "no CUDA device" error here, and (cuobjdump, when one is
#                    found) the library holds device code for every requested architecture.
#
# Environment knobs:
#   PYTHON               interpreter for the venv (default python3)
#   MMSSM_CUDA_VENV      the cached venv (default ${XDG_CACHE_HOME:-~/.cache}/mmssm/cuda-venv:
#                        shared by every checkout on the machine, ~4 GB)
#   MMSSM_CUDA_WHEELS    where the torch wheel is kept (default <venv>/../wheels)
#   MMSSM_CUDA_BUILD     build directory (default <repo>/.cache/cuda-build)
#   TORCH_CUDA_ARCH_LIST architectures (default: setup.py's, Turing..Hopper + sm_90 PTX)
#   MAX_JOBS             parallel compile jobs (default 2)
#   MMSSM_WITH_ORT       1 builds the ONNX Runtime operator library too (default 0)
#   CUDA_HOME            CUDA toolkit (default: the one of the nvcc on PATH, or /usr/local/cuda)
#
# Exit status: 0 all checks passed; 1 a check or the build failed; 2 no nvcc (nothing can
# be built here); 3 the torch download failed (pip's own error is printed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TORCH_VERSION=2.13.0
PYTHON="${PYTHON:-python3}"
CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}/mmssm"
VENV="${MMSSM_CUDA_VENV:-$CACHE_HOME/cuda-venv}"
WHEELS="${MMSSM_CUDA_WHEELS:-$(dirname "$VENV")/wheels}"
BUILD="${MMSSM_CUDA_BUILD:-$ROOT/.cache/cuda-build}"
REQ="$ROOT/requirements"
export MAX_JOBS="${MAX_JOBS:-2}"
export MMSSM_WITH_ORT="${MMSSM_WITH_ORT:-0}"

log() { printf '[check_cuda_build] %s\n' "$*" >&2; }
die() { local code="$1"; shift; printf '[check_cuda_build] ERROR: %s\n' "$*" >&2; exit "$code"; }
T_START=$SECONDS
lap() { log "$1 done in $((SECONDS - $2)) s"; }
# pip, quiet; its output (less the local-index warnings) only when it fails.
venv_pip() {
    local out
    if ! out="$("$VPY" -m pip -q "$@" 2>&1)"; then
        printf '%s\n' "$out" | grep -v '^WARNING: Location' >&2 || true
        die 1 "pip $1 failed in $VENV (above)"
    fi
}

# ------------------------------------------------------------------ toolkit
if [ -z "${CUDA_HOME:-}" ]; then
    if command -v nvcc >/dev/null; then
        # /usr/local/bin/nvcc may be a wrapper script: ask nvcc where it lives.
        CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
        [ -f "$CUDA_HOME/include/cuda_runtime_api.h" ] || CUDA_HOME=/usr/local/cuda
    else
        CUDA_HOME=/usr/local/cuda
    fi
fi
[ -x "$CUDA_HOME/bin/nvcc" ] || die 2 "no nvcc in CUDA_HOME=$CUDA_HOME (set CUDA_HOME or put nvcc on PATH)"
[ -f "$CUDA_HOME/include/cuda_runtime_api.h" ] || die 2 "$CUDA_HOME has nvcc but no include/cuda_runtime_api.h"
export CUDA_HOME
NVCC_VERSION="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
log "CUDA toolkit $CUDA_HOME (nvcc $NVCC_VERSION), MAX_JOBS=$MAX_JOBS"

command -v "$PYTHON" >/dev/null || die 1 "interpreter '$PYTHON' not found (set PYTHON=...)"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
hash_files() { local f; for f in "$@"; do printf '%s\n' "${f#"$ROOT"/}"; cat "$f"; done | sha256sum | cut -d' ' -f1; }
# The venv's recipe: what it is made of. Editing this script's other steps keeps the venv.
VENV_RECIPE="torch===$TORCH_VERSION --no-deps; torch requirements less triton, cuda-bindings; recipe 2"
VENV_HASH="$( { printf 'python %s\n%s\n' "$PY_VERSION" "$VENV_RECIPE"
               hash_files "$REQ/build.txt" "$REQ/device.txt" "$REQ/constraints.txt"; } \
             | sha256sum | cut -d' ' -f1)"
VENV_STAMP="$VENV/.mmssm-cuda-venv.sha256"
VPY="$VENV/bin/python"

# ------------------------------------------------------------------ 1-2. cached venv
mkdir -p "$(dirname "$VENV")" "$WHEELS"
exec 9>"$(dirname "$VENV")/.cuda-venv.lock"
flock 9   # one setup at a time (several checkouts share the venv)
if [ -x "$VPY" ] && [ "$(cat "$VENV_STAMP" 2>/dev/null)" = "$VENV_HASH" ]; then
    log "venv $VENV is up to date"
else
    export PIP_CONSTRAINT="$REQ/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
    t=$SECONDS
    shopt -s nullglob
    wheels=("$WHEELS"/torch-"$TORCH_VERSION"-*-manylinux*_x86_64.whl)
    shopt -u nullglob
    if [ ${#wheels[@]} -eq 0 ]; then
        log "downloading the CUDA build of torch==$TORCH_VERSION (~530 MB) into $WHEELS"
        # PIP_CONSTRAINT pins torch==2.13.0, which '===' also satisfies.
        if ! out="$("$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$WHEELS" \
                    "torch===$TORCH_VERSION" 2>&1)"; then
            printf '%s\n' "$out" | grep -v '^WARNING: Location' >&2
            die 3 "pip could not download torch===$TORCH_VERSION (error above)"
        fi
        wheels=("$WHEELS"/torch-"$TORCH_VERSION"-*.whl)
        lap "torch download ($(du -m "${wheels[0]}" | cut -f1) MB)" "$t"
    fi
    TORCH_WHEEL="${wheels[0]}"
    t=$SECONDS
    [ ! -e "$VENV" ] || [ -f "$VENV/pyvenv.cfg" ] \
        || die 1 "$VENV exists and is not a virtual environment: not replacing it (MMSSM_CUDA_VENV)"
    rm -rf "$VENV"
    log "creating $VENV ($PYTHON $PY_VERSION)"
    "$PYTHON" -m venv "$VENV"
    # torch's own requirements less the two that `import torch` never needs, and
    # requirements/build.txt less torch (naming torch would make pip resolve torch's
    # requirements again, triton included).
    mapfile -t build_reqs < <("$VPY" - "$TORCH_WHEEL" "$REQ/build.txt" <<'EOF'
import re
import sys
import zipfile

def name(req):
    return re.match(r'\s*([A-Za-z0-9._-]+)', req).group(1).lower().replace('_', '-')

with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith('.dist-info/METADATA'))
    for line in wheel.read(meta).decode().splitlines():
        if line.startswith('Requires-Dist:'):
            req = line.split(':', 1)[1].strip()
            if 'extra ==' not in req and name(req) not in ('triton', 'cuda-bindings'):
                print(req)
with open(sys.argv[2]) as f:
    for line in f:
        req = line.split('#', 1)[0].strip()
        if req and name(req) != 'torch':
            print(req)
EOF
)
    [ ${#build_reqs[@]} -gt 3 ] || die 1 "could not read torch's requirements from $TORCH_WHEEL"
    log "installing $(basename "$TORCH_WHEEL") --no-deps, ${#build_reqs[@]} build requirements, requirements/device.txt --no-deps"
    venv_pip install --no-deps "$TORCH_WHEEL"
    venv_pip install "${build_reqs[@]}"
    venv_pip install --no-deps -r "$REQ/device.txt"
    "$VPY" -c 'import torch, mmengine; assert torch.version.cuda, torch.__version__' \
        || die 1 "the CUDA venv does not import torch (CUDA) and mmengine (see above)"
    printf '%s\n' "$VENV_HASH" >"$VENV_STAMP"
    lap "venv ($(du -sm "$VENV" | cut -f1) MB)" "$t"
fi
flock -u 9
TORCH_FULL="$("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
log "torch $TORCH_FULL"

# ------------------------------------------------------------------ 3. build
t=$SECONDS
mkdir -p "$BUILD"
exec 8>"$BUILD/.lock"
flock 8
log "building mmssm (setup.py build, out of tree: $BUILD)"
if ! "$VPY" setup.py build --build-base "$BUILD" >"$BUILD/build.log" 2>&1; then
    tail -n 60 "$BUILD/build.log" >&2
    die 1 "the build failed (full log: $BUILD/build.log)"
fi
grep -E '^mmssm: ' "$BUILD/build.log" >&2 || true
LIB="$(find "$BUILD" -maxdepth 1 -type d -name 'lib.*' | head -n 1)"
shopt -s nullglob
SO=("$LIB"/mmssm/_C_cuda.*.so)
shopt -u nullglob
[ ${#SO[@]} -eq 1 ] || die 1 "the build made no mmssm/_C_cuda*.so in $LIB (log: $BUILD/build.log)"
lap "build" "$t"

# ------------------------------------------------------------------ 4. checks
t=$SECONDS
# From the build directory, with PYTHONPATH pointing there: the checkout's own mmssm/
# (CPU build) must not shadow the built package.
(cd "$LIB" && PYTHONPATH="$LIB" MMSSM_SCAN_BACKEND= "$VPY" - <<'EOF'
import os

import torch

import mmssm._C_cuda as ext
from mmssm.ops import selective_scan
from mmssm.ops.kernels import backend_available, load_backend

assert torch.version.cuda, f'torch {torch.__version__} is not a CUDA build'
here = os.path.dirname(os.path.abspath(ext.__file__))
assert here == os.path.join(os.getcwd(), 'mmssm'), f'imported {ext.__file__}, not the build'
assert load_backend('cuda') is ext
print(f'import mmssm._C_cuda: ok ({os.path.basename(ext.__file__)}, '
      f'torch {torch.__version__}, CUDA {torch.version.cuda})')

u = torch.randn(1, 4, 8)
args = (u, u.clone(), -torch.rand(4, 1), torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8))
if torch.cuda.device_count() == 0:
    for name, call in (('fwd', lambda: ext.fwd(*args)),
                       ('bwd', lambda: ext.bwd(*args, None, None, None, u, None)),
                       ("selective_scan(backend='cuda')",
                        lambda: selective_scan(*args, backend='cuda'))):
        try:
            call()
        except (RuntimeError, ValueError) as err:
            message = str(err).splitlines()[0]
            assert 'no CUDA device' in message, f'{name}: unexpected error: {message}'
            print(f'{name} without a GPU: {type(err).__name__}: {message}')
        else:
            raise AssertionError(f'{name} ran without a GPU')
    assert not backend_available('cuda')
else:
    print(f'{torch.cuda.device_count()} CUDA device(s) visible: the no-device check is '
          'skipped (tools/device_check.sh tests the kernels on a GPU)')
EOF
) || die 1 "the import / no-GPU checks failed (above)"

# Device code for every requested architecture (cuobjdump ships with the CUDA toolkit
# and with triton's wheel; without one this check is reported as not done).
CUOBJDUMP="$(command -v cuobjdump || true)"
[ -n "$CUOBJDUMP" ] || [ ! -x "$CUDA_HOME/bin/cuobjdump" ] || CUOBJDUMP="$CUDA_HOME/bin/cuobjdump"
if [ -z "$CUOBJDUMP" ]; then
    for c in "${MMSSM_VENV:-$ROOT/.venv}"/lib/python*/site-packages/triton/backends/nvidia/bin/cuobjdump; do
        [ -x "$c" ] && CUOBJDUMP="$c"
    done
fi
if [ -z "$CUOBJDUMP" ]; then
    log "architectures: NOT checked (no cuobjdump on PATH, in CUDA_HOME or in .venv's triton)"
else
    ARCHS="$(grep -o 'archs [^ ]*' "$BUILD/build.log" | tail -n 1 | cut -d' ' -f2)"
    ELF="$("$CUOBJDUMP" --list-elf "${SO[0]}")"
    PTX="$("$CUOBJDUMP" --list-ptx "${SO[0]}" 2>/dev/null || true)"
    IFS=';' read -r -a arch_list <<<"${ARCHS:-}"
    [ ${#arch_list[@]} -gt 0 ] || die 1 "could not read the architectures from $BUILD/build.log"
    for arch in "${arch_list[@]}"; do
        sm="sm_${arch%%+*}"; sm="${sm/./}"
        n="$(grep -c "\.$sm\.cubin" <<<"$ELF" || true)"
        [ "$n" -eq 7 ] || die 1 "expected 7 $sm cubins (one per .cu file) in ${SO[0]}, found $n"
        if [[ "$arch" == *+PTX ]]; then
            grep -q "\.$sm\.ptx" <<<"$PTX" || die 1 "no $sm PTX in ${SO[0]} ($arch requested)"
        fi
    done
    log "architectures: $ARCHS all present ($(grep -c cubin <<<"$ELF") cubins; $(basename "$CUOBJDUMP"))"
fi
lap "checks" "$t"
log "OK: mmssm._C_cuda builds, links and imports against torch $TORCH_FULL ($((SECONDS - T_START)) s in all)"
