"""Build and install mmssm.

Extensions:
    mmssm._C       C++17 CPU selective scan (SIMD kernels, torch's intra-op threads),
                   always built.
    mmssm._ort_ops ONNX Runtime custom-operator library (csrc/onnxruntime + the CPU
                   kernels; no torch, no Python symbols): runs the mmssm.SelectiveScan
                   nodes of files exported with scan_op='custom'. Built except on Windows
                   or with MMSSM_WITH_ORT=0.
    mmssm._C_cuda  CUDA selective scan (csrc/selective_scan/cuda/*.cu + cuda_bindings.cpp),
                   built only when torch has CUDA (torch.version.cuda) and nvcc is found.
                   Otherwise ONE line says why it was skipped; the 'cpu' and 'torch'
                   backends still work.

Usage (torch must already be installed; it is never pulled in by this build):
    pip install --no-build-isolation -e .
    python setup.py build_ext --inplace

Environment:
    TORCH_CUDA_ARCH_LIST  CUDA architectures, default "7.0;7.5;8.0;8.6;8.9;9.0+PTX"
                          (Volta to Hopper as SASS, + sm_90 PTX for newer GPUs; 7.0 is
                          left out with CUDA >= 13, which no longer supports it).
    MMSSM_WITH_CUDA=0     skip the CUDA extension even when it could be built.
    MMSSM_WITH_ORT=0      skip the ONNX Runtime operator library.
    MAX_JOBS              parallel compile jobs (ninja).
"""
import glob
import os
import os.path as osp
import re
import shutil
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
CSRC = osp.join('csrc', 'selective_scan')
DEFAULT_CUDA_ARCHS = '7.0;7.5;8.0;8.6;8.9;9.0+PTX'
# CUDA 13 dropped the pre-Turing architectures (sm_70 included).
DEFAULT_CUDA_ARCHS_CUDA13 = '7.5;8.0;8.6;8.9;9.0+PTX'


def read_version():
    with open(osp.join(ROOT, 'mmssm', 'version.py'), encoding='utf-8') as f:
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read())
    if match is None:
        raise RuntimeError('mmssm/version.py does not define __version__')
    return match.group(1)


def relative_sources(pattern):
    # setuptools wants paths relative to setup.py.
    return sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, pattern)))


def cxx_flags():
    """-O3 C++20 with OpenMP (the binding's at::parallel_for runs on torch's OpenMP pool).
    C++20 because torch 2.13's headers need it (built as C++17 they warn about C++20-only
    constructs, which GCC accepts as extensions; torch's own cpp_extension default is
    C++20); the kernels themselves are C++17-clean and their standalone compile checks
    build them as C++17. No -march: the CPU kernels are compiled once per instruction set
    in their own files (x86-64 baseline / AVX2+FMA / AVX-512, picked at run time), so one
    binary runs on every x86-64 or arm64 machine."""
    if sys.platform == 'win32':
        return ['/O2', '/std:c++20', '/openmp'], []
    # -fno-trapping-math lets GCC if-convert (and so vectorise) the branch-free math
    # helpers; -g0 overrides the -g of Python's CFLAGS (debug info triples build time).
    # -Wno-psabi: the kernels pass SIMD vectors only between always-inlined functions.
    flags = ['-O3', '-std=c++20', '-g0', '-fno-math-errno', '-fno-trapping-math',
             '-ffp-contract=fast', '-Wno-unknown-pragmas', '-Wno-psabi']
    if sys.platform == 'darwin':  # Apple clang has no bundled OpenMP runtime
        return flags, []
    # GCC schedules instructions before register allocation only where asked to on x86:
    # there it interleaves the independent polynomial chains of a time step's decays
    # (scan_cpu_kernels.h: advance_states), which otherwise run one after the other and
    # leave the FMA units waiting on latency (N = 16 forward 1.06-1.08x on AVX2, same
    # results: docs/benchmarks.md). -fsched-pressure keeps it from adding spills.
    return flags + ['-fschedule-insns', '-fsched-pressure', '-fopenmp'], ['-fopenmp']


def cuda_skip_reason(torch, cpp_extension):
    """Why mmssm._C_cuda cannot/should not be built here, or None to build it."""
    if os.environ.get('MMSSM_WITH_CUDA', '').strip() == '0':
        return 'MMSSM_WITH_CUDA=0'
    if torch.version.cuda is None:
        return f'torch {torch.__version__} has no CUDA (torch.version.cuda is None)'
    cuda_home = cpp_extension.CUDA_HOME
    nvcc = osp.join(cuda_home, 'bin', 'nvcc') if cuda_home else None
    if not (nvcc and osp.exists(nvcc)) and shutil.which('nvcc') is None:
        return 'nvcc not found (set CUDA_HOME or put nvcc on PATH)'
    if not relative_sources(osp.join(CSRC, 'cuda', '*.cu')):
        return f'no CUDA sources in {CSRC}/cuda'
    if not osp.exists(osp.join(ROOT, CSRC, 'cuda_bindings.cpp')):
        return f'{CSRC}/cuda_bindings.cpp is missing'
    return None


def building():
    """True when this setup.py run compiles (not for metadata-only hook calls, so the
    status line below is printed once per pip install)."""
    return any(cmd in sys.argv for cmd in _BUILD_COMMANDS)


_BUILD_COMMANDS = ('build_ext', 'build', 'install', 'develop', 'bdist_wheel',
                   'editable_wheel')


def build_extensions():
    """(ext_modules, cmdclass), or ([], {}) when torch is not importable (metadata-only
    commands such as `setup.py --version`)."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        if building():
            raise RuntimeError('mmssm: building the extensions needs torch installed first '
                               '(pip install torch, then pip install --no-build-isolation '
                               '-e .)')
        return [], {}

    cflags, ldflags = cxx_flags()
    include_dirs = [osp.join(ROOT, CSRC)]
    ext_modules = [
        cpp_extension.CppExtension(
            name='mmssm._C',
            sources=[osp.join(CSRC, 'bindings.cpp')]
            + relative_sources(osp.join(CSRC, 'cpu', '*.cpp')),
            include_dirs=include_dirs,
            extra_compile_args={'cxx': cflags},
            extra_link_args=ldflags,
        )
    ]

    if sys.platform != 'win32' and os.environ.get('MMSSM_WITH_ORT', '').strip() != '0':
        # Loaded by ONNX Runtime (register_custom_ops_library), not imported: no torch,
        # no OpenMP (it runs on ONNX Runtime's pool); only RegisterCustomOps is exported
        # (-fvisibility=hidden), so its kernels never bind to mmssm._C's in one process.
        ort_flags = [f for f in cflags if f != '-fopenmp'] + ['-fvisibility=hidden']
        ext_modules.append(
            Extension(
                name='mmssm._ort_ops',
                sources=[osp.join('csrc', 'onnxruntime', 'scan_op.cpp')]
                + relative_sources(osp.join(CSRC, 'cpu', '*.cpp')),
                include_dirs=include_dirs,
                extra_compile_args={'cxx': ort_flags},
                language='c++',
            ))

    reason = cuda_skip_reason(torch, cpp_extension)
    if reason is None:
        # An explicit list keeps the build independent of the GPU (if any) of the
        # build machine; torch turns it into -gencode flags.
        cuda_major = int(torch.version.cuda.split('.')[0])
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', DEFAULT_CUDA_ARCHS_CUDA13
                              if cuda_major >= 13 else DEFAULT_CUDA_ARCHS)
        host = [f for f in cflags if f != '-ffp-contract=fast']
        # nvcc accepts C++20 from CUDA 12 on; older toolkits (with older torch) get C++17.
        cuda_std = '-std=c++20' if cuda_major >= 12 else '-std=c++17'
        nvcc = ['-O3', cuda_std, '--use_fast_math', '-lineinfo',
                '--expt-relaxed-constexpr', '--expt-extended-lambda',
                # torch defines these to hide the half/bf16 operators; the kernels are
                # torch-free and use cuda_fp16.h / cuda_bf16.h directly.
                '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
                '-U__CUDA_NO_HALF2_OPERATORS__', '-U__CUDA_NO_BFLOAT16_OPERATORS__',
                '-U__CUDA_NO_BFLOAT16_CONVERSIONS__', '-U__CUDA_NO_BFLOAT162_OPERATORS__']
        ext_modules.append(
            cpp_extension.CUDAExtension(
                name='mmssm._C_cuda',
                sources=[osp.join(CSRC, 'cuda_bindings.cpp')]
                + relative_sources(osp.join(CSRC, 'cuda', '*.cu')),
                include_dirs=include_dirs,
                extra_compile_args={'cxx': host, 'nvcc': nvcc},
                extra_link_args=ldflags,
            ))
        if building():
            print(f'mmssm: building the CUDA backend mmssm._C_cuda for CUDA '
                  f'{torch.version.cuda}, archs {os.environ["TORCH_CUDA_ARCH_LIST"]}')
    elif building():
        print(f'mmssm: CUDA backend mmssm._C_cuda skipped: {reason}; '
              f"the 'cpu' and 'torch' scan backends are available")

    build_ext = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)
    return ext_modules, {'build_ext': build_ext}


# Shipped inside the package the way OpenMMLab packages ship theirs (``<pkg>/.mim/``, what
# mim and mmssm.apis.official_checkpoints.config_dir read): the configs (their relative
# ``_base_`` links keep working) and the model index.
MIM_FILES = ('configs', 'model-index.yml')


class BuildPyWithMim(build_py):
    """build_py that also copies :data:`MIM_FILES` into ``mmssm/.mim`` of the build.
    Editable installs skip it: the package then finds ``configs/`` of the checkout."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = osp.join(self.build_lib, 'mmssm', '.mim')
        for name in MIM_FILES:
            src, dst = osp.join(ROOT, name), osp.join(target, name)
            if osp.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            elif osp.isfile(src):
                os.makedirs(target, exist_ok=True)
                shutil.copy2(src, dst)
            else:
                raise FileNotFoundError(f'mmssm: {src} is missing from the source tree')


ext_modules, cmdclass = build_extensions()
cmdclass['build_py'] = BuildPyWithMim

setup(
    name='mmssm',
    version=read_version(),
    description='Vision state-space-model backbones (VMamba, MSVMamba, EfficientVMamba, '
                'MobileMamba, Vim) for OpenMMLab, with CPU and CUDA selective-scan kernels',
    packages=find_packages(include=['mmssm', 'mmssm.*']),
    python_requires='>=3.8',
    # Deliberately unpinned: an already-installed torch always satisfies these, so pip
    # never replaces it (use --no-build-isolation so the build sees that torch too).
    install_requires=['torch', 'mmengine', 'numpy'],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
