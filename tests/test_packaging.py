"""A non-editable ``pip install .`` ships mmssm's configs inside the package
(``mmssm/.mim/configs``, as OpenMMLab packages ship theirs), and the tools that look
configs up (the official detector/segmentor converter's config inference) work from the
installed package alone, outside any checkout.

Slow: the install compiles the C++ extension once.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'model_converters' / 'official_to_mmssm.py'

pytestmark = pytest.mark.slow


def _source_copy(dst: Path) -> Path:
    """The files a build reads, without build outputs of the checkout."""
    skip = shutil.ignore_patterns('.git', '.venv', 'build', 'dist', '*.egg-info', '*.so',
                                  '__pycache__', 'tests', 'work_dirs', 'data', '.cache',
                                  '.mim')
    shutil.copytree(REPO, dst, ignore=skip)
    return dst


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp('pip_install')
    source, target = _source_copy(root / 'src'), root / 'site'
    # (the ONNX Runtime operator library, a second build of the CPU kernels, is left
    # out: nothing here needs it, and it would double the build time)
    env = dict(os.environ, MMSSM_WITH_CUDA='0', MMSSM_WITH_ORT='0',
               PIP_DISABLE_PIP_VERSION_CHECK='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-build-isolation', '--no-deps',
         '--no-index', '--target', str(target), str(source)],
        cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.rmtree(source)  # nothing of the checkout is left to fall back on
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_configs_ship_inside_the_package(installed, tmp_path):
    shipped = installed / 'mmssm' / '.mim'
    def files(root):  # pip byte-compiles the shipped .py files: compare the sources
        return sorted(p.relative_to(root) for p in root.rglob('*')
                      if p.is_file() and '__pycache__' not in p.parts)

    ours = files(REPO / 'configs')
    assert ours and files(shipped / 'configs') == ours
    assert (shipped / 'model-index.yml').is_file()
    proc = run_installed(installed, tmp_path, '-c', (
        'import mmssm\n'
        'from mmssm.apis.official_checkpoints import candidate_configs, config_dir\n'
        'print(mmssm.__file__)\n'
        'print(config_dir())\n'
        "print(len(candidate_configs('msvmamba', 'mask_rcnn', 'det')))\n"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, directory, count = proc.stdout.split()
    assert Path(package).is_relative_to(installed)
    assert Path(directory) == shipped / 'configs'
    assert int(count) == len(list((REPO / 'configs').glob('mask_rcnn_msvmamba_*.py')))


def test_the_converter_infers_the_config_from_the_installed_package(installed, tmp_path):
    sys.path.insert(0, str(REPO / 'tests'))
    try:
        from test_official_checkpoints import official_mask_rcnn_msvmamba_nano
    finally:
        sys.path.remove(str(REPO / 'tests'))
    src, dst = tmp_path / 'mask_rcnn_ms_vssm_fpn_coco_nano.pth', tmp_path / 'converted.pth'
    official_mask_rcnn_msvmamba_nano(src)
    proc = run_installed(installed, tmp_path, str(TOOL), str(src), str(dst), '--family',
                         'msvmamba', '--task', 'det')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    inferred = installed / 'mmssm' / '.mim' / 'configs' / 'mask_rcnn_msvmamba_n_1x.py'
    assert f'config inferred from the checkpoint: {inferred}' in proc.stdout
    assert 'strict load into MaskRCNN with MSVMamba: OK' in proc.stdout and dst.is_file()
