"""Compatibility shims: OpenMMLab's last releases on today's torch / numpy / setuptools.

mmssm targets torch 2.13, numpy 2.x and setuptools < 82 with the last OpenMMLab releases
(mmengine 0.10.7, mmcv 2.1.0 built from source, mmdet 3.3.0, mmsegmentation 1.2.2,
mmpretrain 1.2.0), all frozen since 2024/early 2025. This module is the only place that
patches them. Each shim below says what breaks, which upstream issue/PR it mirrors, and is

* minimal: it changes one name inside the one module that needs it, never a global of
  torch or numpy, and never a file in site-packages;
* lazy: nothing here imports mmengine, mmdet, mmseg or mmpretrain. A shim for module ``M``
  runs right after ``M`` is first imported (a ``sys.meta_path`` post-import hook), or at
  once if ``M`` is already loaded;
* idempotent: :func:`apply` may run any number of times; each module is patched once.

``import mmssm`` calls :func:`apply`. :data:`SHIMS` lists what is installed and
:func:`applied` what has actually been patched so far.

What is *not* shimmed (and therefore does not work here): what in mmpretrain really
calls torchvision (the ``torchvision/*`` transform wrappers, ``NumpyToPIL`` images into
``PackInputs``, ``MAERandomResizedCrop``, the multimodal grounding box metrics: each
raises a clear ImportError), and mmdet's YouTube-VIS evaluation (``np.float``, gone
since numpy 1.24).
"""
import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import os.path as osp
import re
import sys
import threading
import types
import zipfile
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

__all__ = ['SHIMS', 'apply', 'applied']


# --------------------------------------------------------------------------- machinery
class Shim(NamedTuple):
    """One patch of one upstream module.

    ``patch(module)`` runs after the module's code; ``around`` (optional) is a context
    manager factory wrapped around the execution of the module's code itself, for imports
    that fail at module level.
    """
    name: str
    module: str
    patch: Optional[Callable[[types.ModuleType], None]]
    around: Optional[Callable[[], contextlib.AbstractContextManager]] = None
    reason: str = ''


_MARK = '__mmssm_compat__'  # set of shim names applied to a module
_lock = threading.RLock()
_registry: Dict[str, List[Shim]] = {}


def _patch_loaded(module: types.ModuleType, shims: List[Shim]) -> None:
    done = module.__dict__.setdefault(_MARK, set())
    for shim in shims:
        if shim.name not in done and shim.patch is not None:
            shim.patch(module)
        done.add(shim.name)


class _ShimLoader(importlib.abc.Loader):
    """Wraps the real loader of a shimmed module; everything else is forwarded."""

    def __init__(self, loader, shims: List[Shim]):
        self._loader = loader
        self._shims = shims

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with contextlib.ExitStack() as stack:
            for shim in self._shims:
                if shim.around is not None:
                    stack.enter_context(shim.around())
            self._loader.exec_module(module)
        _patch_loaded(module, self._shims)

    def __getattr__(self, name):  # get_resource_reader, is_package, get_code, ...
        return getattr(self._loader, name)


class _ShimFinder(importlib.abc.MetaPathFinder):
    """Post-import hook: finds shimmed modules through the other finders, wraps loader."""

    _mmssm_compat_finder = True
    _busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        shims = _registry.get(fullname)
        if not shims or getattr(self._busy, 'name', None) == fullname:
            return None
        self._busy.name = fullname
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, 'find_spec'):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.name = None
        if spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        spec.loader = _ShimLoader(spec.loader, shims)
        return spec


def _install(shim: Shim) -> None:
    with _lock:
        shims = _registry.setdefault(shim.module, [])
        if all(s.name != shim.name for s in shims):
            shims.append(shim)
        module = sys.modules.get(shim.module)
        if module is not None:
            _patch_loaded(module, [shim])


class _ModuleView(types.ModuleType):
    """What one upstream module sees under the name of another module (``torch``,
    ``np``): the real module with a few attributes overridden. Installed as that module's
    global, so the override reaches no other code."""

    def __init__(self, target: types.ModuleType, **overrides):
        super().__init__(target.__name__, target.__doc__)
        self.__dict__.update(overrides)
        self.__dict__['_mmssm_target'] = target

    def __getattr__(self, name):
        return getattr(self.__dict__['_mmssm_target'], name)


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r'\d+', text.split('+')[0])[:3])


# ------------------------------------ 1. torch>=2.6 weights_only: mmengine's checkpoints
def _safe_load(f, map_location=None, *args, weights_only=None, **kwargs):
    """``torch.load`` for mmengine's checkpoint loaders: mmssm's safe loader.

    Without an explicit ``weights_only`` (mmengine 0.10.7 never passes one) the file goes
    through :func:`mmssm.fileio.load_checkpoint_file`: ``weights_only=True`` plus the
    allow-list that full mmengine training checkpoints need, or a full unpickle if the
    user opted in for that file (``--trust-pickle`` / ``mmssm.fileio.trust_file``). An
    explicit ``weights_only=`` from the caller is obeyed as given.
    """
    import torch
    if weights_only is not None or args or kwargs:
        return torch.load(f, map_location, *args, weights_only=weights_only, **kwargs)
    from mmssm.fileio import load_checkpoint_file
    return load_checkpoint_file(f, map_location=map_location)


def _safe_load_url(url, model_dir=None, map_location=None, progress=True,
                   check_hash=False, file_name=None, weights_only=None):
    """``load_url`` for mmengine's ``http(s)://``, ``torchvision://``, ``open-mmlab://``
    and ``mmcls://`` loaders: torch.hub's download and cache, then :func:`_safe_load`.

    mmengine 0.10.7 uses ``torch.hub.load_state_dict_from_url``, whose ``weights_only``
    defaults to False: a remote file would be fully unpickled even on torch>=2.6.
    """
    import torch.hub
    from urllib.parse import urlparse

    from mmssm.fileio import UnsafeCheckpointError, is_trusted, load_checkpoint_file
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, file_name or osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        sys.stdout.write(f'Downloading: "{url}" to {cached}\n')
        match = torch.hub.HASH_REGEX.search(osp.basename(cached)) if check_hash else None
        torch.hub.download_url_to_file(url, cached, match.group(1) if match else None,
                                       progress=progress)
    if weights_only is not None:
        return torch.load(cached, map_location=map_location, weights_only=weights_only)
    if zipfile.is_zipfile(cached):
        with zipfile.ZipFile(cached) as archive:
            members = archive.infolist()
        if len(members) == 1 and not members[0].is_dir():
            raise RuntimeError(f'{url} ({cached}) is a zip archive holding one file '
                               '(the pre-1.6 "legacy zip" layout): extract it and load the '
                               'file it holds instead')
    try:
        return load_checkpoint_file(cached, trust_pickle=is_trusted(url),
                                    map_location=map_location)
    except UnsafeCheckpointError as err:  # name what the user wrote, not only the cache
        raise UnsafeCheckpointError(f'{url}: {err}') from err


def _patch_checkpoint_loading(module: types.ModuleType) -> None:
    """torch 2.6 flipped ``torch.load``'s default to ``weights_only=True``. mmengine 0.10.7
    calls ``torch.load(filename, map_location=...)`` in its checkpoint loaders
    (``runner/checkpoint.py``: ``load_from_local``, ``_pavi``, ``_ceph``, ``_openmmlab``),
    so ``load_from``, ``resume``, ``tools/test.py``, ``init_cfg=dict(type='Pretrained')``
    and the Inferencers fail on every full training checkpoint: the Runner saves
    ``message_hub`` with mmengine ``HistoryBuffer`` objects and numpy arrays/scalars,
    whose unpickling needs ``builtins.getattr`` (open-mmlab/mmengine#1655). Its URL
    loader goes the other way: ``load_url`` is ``torch.hub.load_state_dict_from_url``,
    which still defaults to ``weights_only=False``, so a downloaded file is fully
    unpickled. mmengine main answers #1655 with #1670 (``weights_only=False`` everywhere:
    any checkpoint can run code), unreleased.

    This shim turns no unpickling on. Inside ``mmengine.runner.checkpoint`` only,
    ``torch`` becomes a view of torch whose ``load`` is :func:`_safe_load` and
    ``load_url`` becomes :func:`_safe_load_url`: mmssm's allow-list loader
    (:mod:`mmssm.fileio`), which rebuilds what training checkpoints hold (real
    HistoryBuffers, numpy data) and refuses anything else by name, unless the user opted
    in for that one file. ``torch.load`` elsewhere keeps torch's own default.
    """
    import torch
    if module.__dict__.get('torch') is torch:
        module.torch = _ModuleView(torch, load=_safe_load)
    if 'load_url' in module.__dict__:
        module.load_url = _safe_load_url


# ---------------------------------------- 2. setuptools>=82: no pkg_resources in mmengine
def _distribution(package: str):
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _top_level_module(dist) -> Optional[str]:
    text = dist.read_text('top_level.txt')
    if text and text.split():
        return text.split()[0]
    name = dist.metadata['Name']
    for module, dists in importlib.metadata.packages_distributions().items():
        if name in dists:
            return module
    return None


def _module_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # dashes, relative names, broken parents
        return None


def is_installed(package: str) -> bool:
    """mmengine ``is_installed`` without pkg_resources: a distribution of that name is
    installed, or a module of that name is importable (mmengine's own fallback)."""
    if _distribution(package) is not None:
        return True
    spec = _module_spec(package)
    return spec is not None and spec.origin is not None


def get_installed_path(package: str) -> str:
    """mmengine ``get_installed_path`` without pkg_resources: the directory of the package
    Python actually imports for ``package`` (a distribution name such as
    ``mmsegmentation`` maps to its top-level module ``mmseg``). Works for editable installs,
    where a distribution's location is not the source directory."""
    module = package
    spec = _module_spec(module)
    if spec is None:
        dist = _distribution(package)
        if dist is None:
            raise importlib.metadata.PackageNotFoundError(package)
        module = _top_level_module(dist)
        if module is None:
            raise ValueError(f'can not infer the module name of {package}')
        spec = _module_spec(module)
        if spec is None:
            raise importlib.metadata.PackageNotFoundError(
                f'{package} is installed but its module {module!r} cannot be found')
    if spec.origin is None:
        raise RuntimeError(f'{package} is a namespace package, which is invalid '
                           'for `get_install_path`')
    return osp.dirname(spec.origin)


def package2module(package: str) -> str:
    """mmengine ``package2module`` without pkg_resources."""
    dist = _distribution(package)
    module = _top_level_module(dist) if dist is not None else None
    if module is None:
        raise ValueError(f'can not infer the module name of {package}')
    return module


_PACKAGE_UTILS = dict(is_installed=is_installed, get_installed_path=get_installed_path,
                      package2module=package2module)


def _patch_package_utils(module: types.ModuleType) -> None:
    """mmengine 0.10.7 resolves ``mmdet::``/``mmseg::``/``mmpretrain::`` config paths
    (``Config.fromfile``, ``_base_``, ``mmengine.hub.get_config``) with
    ``utils/package_utils.py``, which imports ``pkg_resources`` -- removed in setuptools 82
    (2026-02) and, in setuptools 81, a deprecation ``UserWarning`` on every call (the
    function reloads pkg_resources, ~0.1 s each). Fixed on mmengine main by
    open-mmlab/mmengine#1676 (importlib), unreleased. The shim rebinds the three functions
    to importlib.metadata versions with mmengine's semantics, in every module that
    imported them by name."""
    for name, func in _PACKAGE_UTILS.items():
        if hasattr(module, name):
            setattr(module, name, func)


# ------------------------------------------ 3. numpy>=2.4: np.in1d removed (mmpretrain)
def _in1d(ar1, ar2, assume_unique=False, invert=False, *, kind=None):
    """``numpy.in1d`` as numpy documented it: ``isin`` on the flattened first input."""
    import numpy
    return numpy.isin(ar1, ar2, assume_unique=assume_unique, invert=invert,
                      kind=kind).ravel()


def _patch_in1d(module: types.ModuleType) -> None:
    """numpy 2.4 removed ``np.in1d`` (deprecated since 2.0; numpy/numpy#29978).
    mmpretrain 1.2.0's retrieval metrics (``RetrievalRecall``,
    ``RetrievalAveragePrecision``) still call it. The shim gives that one module a view of
    numpy with ``in1d`` back (equal to ``isin(...).ravel()``)."""
    import numpy
    real = module.__dict__.get('np')
    if hasattr(numpy, 'in1d') or real is not numpy:
        return
    module.np = _ModuleView(numpy, in1d=_in1d)


# ------------------------------------------------- 4. no torchvision: mmpretrain imports
class _TorchvisionMissing:
    """Stand-in for a torchvision class or function: using it raises a clear ImportError.

    Subclassing it works (mmpretrain derives ``MAERandomResizedCrop`` from
    ``torchvision.transforms.RandomResizedCrop`` at import); instantiating the subclass
    then fails the same way."""

    def __init__(self, *args, **kwargs):
        _needs_torchvision(type(self).__name__)


def _needs_torchvision(what: str = 'this mmpretrain function'):
    raise ImportError(f'{what} needs torchvision, which is not installed; mmssm does not '
                      'provide it (mmpretrain\'s classification pipelines work without it: '
                      'see docs/getting_started.md)')


def _missing_function(name: str) -> Callable:
    def missing(*args, **kwargs):
        _needs_torchvision(f'torchvision {name} (called by mmpretrain)')
    missing.__name__ = missing.__qualname__ = name.rsplit('.', 1)[-1]
    return missing


def _missing_class(name: str) -> type:
    short = name.rsplit('.', 1)[-1]
    return type(short, (_TorchvisionMissing, ), {'__qualname__': short,
                                                 '__module__': name.rsplit('.', 1)[0]})


def _no_listing() -> List[str]:
    """``dir()`` of the placeholder ``torchvision.transforms``: nothing, so mmpretrain's
    ``register_vision_transforms`` registers no ``torchvision/*`` transform and a config
    naming one fails with mmengine's usual 'not in the registry' error."""
    return []


# module -> the names mmpretrain 1.2.0 takes from it at import time
_TORCHVISION_NAMES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    'torchvision': (),
    'torchvision.ops': (),
    'torchvision.ops.boxes': (('box_iou', 'function'), ('generalized_box_iou', 'function'),
                              ('box_area', 'function')),
    'torchvision.transforms': (('RandomResizedCrop', 'class'), ),
    'torchvision.transforms.functional': (('pil_to_tensor', 'function'),
                                          ('resized_crop', 'function')),
    'torchvision.transforms.transforms': (('InterpolationMode', 'class'), ),
}


@contextlib.contextmanager
def _torchvision_placeholder():
    """mmpretrain 1.2.0 imports torchvision at module level in four modules, although
    nothing on the classification path needs it (ecosystem notes §2.8; torchvision pins
    one torch version and has no build for every torch):

    * ``models/utils/box_utils.py`` and ``evaluation/metrics/visual_grounding_eval.py``:
      ``import torchvision.ops.boxes`` (box IoUs of the multimodal grounding code, OFA and
      ``VisualGroundingMetric``). ``mmpretrain.models`` reaches both (heads import
      ``mmpretrain.evaluation``), so without them no model -- not even an
      ``ImageClassifier`` -- can be built.
    * ``datasets/transforms/formatting.py`` line 8, ``import torchvision.transforms.
      functional as F`` (only ``F.pil_to_tensor``, for PIL inputs of ``PackInputs``), and
      ``datasets/transforms/processing.py`` lines 15-21 (``torchvision``, its
      ``transforms`` and ``InterpolationMode``: the ``torchvision/*`` transform wrappers,
      registered by listing ``torchvision.transforms`` at import, and
      ``MAERandomResizedCrop``, a subclass of torchvision's ``RandomResizedCrop``).
      ``mmpretrain.datasets`` imports both, so without them no dataset, no
      ``PackInputs`` -- hence no ``tools/train.py``/``tools/test.py`` -- works.

    No upstream fix: mmpretrain 1.2.0 is its last release; it does not even declare
    torchvision as a requirement (it assumes torchvision comes with torch).

    While (and only while) those four modules execute, and only if torchvision is truly
    absent, the torchvision modules they import resolve to placeholders: every name they
    take is a function or class that raises a clear ImportError when called; the
    placeholder ``torchvision.transforms`` lists no transform, so no ``torchvision/*``
    transform is registered. The placeholder entries are removed from ``sys.modules``
    afterwards, so ``import torchvision`` still fails everywhere else and nobody is misled
    into thinking torchvision is installed. Everything else in those modules (mmpretrain's
    own transforms, ``PackInputs`` of numpy images, the metrics) works unchanged.
    """
    if _module_spec('torchvision') is not None:
        yield
        return
    fakes = {n: types.ModuleType(n, 'mmssm placeholder: torchvision is not installed')
             for n in _TORCHVISION_NAMES}
    for name, module in fakes.items():
        for attr, kind in _TORCHVISION_NAMES[name]:
            full = f'{name}.{attr}'
            setattr(module, attr, _missing_class(full) if kind == 'class'
                    else _missing_function(full))
        parent, _, child = name.rpartition('.')
        if parent:
            setattr(fakes[parent], child, module)
    fakes['torchvision.transforms'].__dir__ = _no_listing
    added = [n for n in fakes if n not in sys.modules]
    for n in added:
        sys.modules[n] = fakes[n]
    try:
        yield
    finally:
        for n in added:
            if sys.modules.get(n) is fakes[n]:
                del sys.modules[n]


# ---------------------------------------------- 5. mmdet SSDHead cannot predict (loss_cls)
def _patch_ssd_head(module: types.ModuleType) -> None:
    """mmdet 3.3.0's ``BaseDenseHead._predict_by_feat_single`` reads
    ``self.loss_cls.custom_cls_channels`` (added for V3Det), but ``SSDHead`` computes its
    classification loss inline and never sets ``loss_cls``: every SSD/SSDLite
    ``predict`` -- validation, ``tools/test.py``, inference -- raises ``AttributeError:
    'SSDHead' object has no attribute 'loss_cls'`` (open-mmlab/mmdetection#11305, #11780;
    fix proposed in #11524, unreleased).

    The shim wraps ``SSDHead.__init__`` so that an instance that did not define a
    ``loss_cls`` of its own gets ``loss_cls = None``: ``getattr(None,
    'custom_cls_channels', False)`` is False and prediction takes SSD's softmax branch, as
    before the V3Det change. Instance-level on purpose: a subclass that does build a
    ``loss_cls`` module keeps it (a class attribute would shadow it).
    """
    head = module.SSDHead
    original = head.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if 'loss_cls' not in self._modules and 'loss_cls' not in self.__dict__:
            self.loss_cls = None

    head.__init__ = __init__  # once per module: _patch_loaded marks the shim applied


# ------------------------------------------ 6. checkpoints that survive a crash while saving
def _is_local_target(filename, file_client_args, backend_args) -> bool:
    if file_client_args is not None or str(filename).startswith('pavi://'):
        return False
    from mmengine.fileio import LocalBackend, get_file_backend
    return isinstance(get_file_backend(filename, backend_args=backend_args), LocalBackend)


def _atomic_save_checkpoint(original: Callable) -> Callable:
    """mmengine's ``save_checkpoint`` that writes local files atomically."""
    if getattr(original, '_mmssm_atomic', False):
        return original

    @functools.wraps(original)
    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        if not _is_local_target(filename, file_client_args, backend_args):
            return original(checkpoint, filename, file_client_args, backend_args)
        from mmssm.fileio import atomic_save
        atomic_save(checkpoint, filename)

    save_checkpoint._mmssm_atomic = True
    return save_checkpoint


def _patch_save_checkpoint(module: types.ModuleType) -> None:
    """mmengine 0.10.7 ``save_checkpoint`` (runner/checkpoint.py) serialises into memory
    and writes the bytes with ``LocalBackend.put`` -- ``open(path, 'wb')`` then one
    ``write``: a process killed during the write leaves a truncated ``.pth`` under the
    final name (and an overwritten checkpoint is lost). No upstream issue or fix as of
    mmengine 0.10.7.

    The shim wraps it so that local targets go through :func:`mmssm.fileio.atomic_save`
    (temporary file in the same directory, flush, fsync, rename); other backends (pavi,
    ceph, petrel, http) are left to mmengine. Applied in the modules that hold the
    function by name: ``runner.checkpoint`` (where it is defined), ``runner.runner``
    (``Runner.save_checkpoint``) and the ``mmengine.runner`` package (``CheckpointHook``'s
    publishing, users' ``from mmengine.runner import save_checkpoint``).
    """
    current = module.__dict__.get('save_checkpoint')
    if callable(current):
        module.save_checkpoint = _atomic_save_checkpoint(current)


def _save_checkpoint_with_step(self, runner, step, meta):
    """``CheckpointHook._save_checkpoint_with_step`` in a crash-safe order: save the new
    checkpoint (atomically, shim 6a), then point ``last_checkpoint`` at it (atomically),
    and only then delete the checkpoint that ``max_keep_ckpts`` retires. The bookkeeping
    (``keep_ckpt_ids`` and ``last_ckpt`` in the message hub, hence in the saved file) is
    mmengine's, unchanged."""
    from mmengine.dist import is_main_process

    from mmssm.fileio import atomic_write_text
    retired = None
    if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            retired = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
    ckpt_filename = self.filename_tmpl.format(step)
    self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
    runner.message_hub.update_info('last_ckpt', self.last_ckpt)
    runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                           save_optimizer=self.save_optimizer,
                           save_param_scheduler=self.save_param_scheduler, meta=meta,
                           by_epoch=self.by_epoch, backend_args=self.backend_args,
                           **self.args)
    if not is_main_process():  # sharded saves: only the main process keeps the books
        return
    atomic_write_text(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
    if retired is not None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(retired))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed checkpoints are directories
            self.file_backend.rmtree(path)


class _DeferredRemovals:
    """A view of a file backend whose ``remove`` / ``rmtree`` are recorded, not done."""

    def __init__(self, backend):
        self._backend = backend
        self.pending: List[Tuple[str, str]] = []

    def remove(self, path):
        self.pending.append(('remove', path))

    def rmtree(self, path):
        self.pending.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


def _remove_after_saving(original: Callable) -> Callable:
    """``CheckpointHook._save_best_checkpoint`` whose deletions (the previous best
    checkpoint) happen only after the method -- the new best save included -- has
    completed; if it fails, nothing is deleted."""
    if getattr(original, '_mmssm_order', False):
        return original

    @functools.wraps(original)
    def _save_best_checkpoint(self, runner, metrics):
        backend = self.file_backend
        deferred = _DeferredRemovals(backend)
        self.file_backend = deferred
        try:
            original(self, runner, metrics)
        finally:
            self.file_backend = backend
        current = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for operation, path in deferred.pending:
            if path not in current:  # never the file just written under the same name
                getattr(backend, operation)(path)

    _save_best_checkpoint._mmssm_order = True
    return _save_best_checkpoint


def _patch_checkpoint_hook(module: types.ModuleType) -> None:
    """mmengine 0.10.7 ``CheckpointHook._save_checkpoint_with_step``
    (hooks/checkpoint_hook.py) deletes the checkpoint that ``max_keep_ckpts`` retires
    *before* it saves the new one, and writes ``last_checkpoint`` in place after it: with
    ``max_keep_ckpts=1`` a crash during the save leaves no checkpoint at all and a
    ``last_checkpoint`` naming a deleted file, so ``--resume`` has nothing to resume
    from. No upstream issue or fix as of mmengine 0.10.7.

    ``_save_best_checkpoint`` (``save_best``) likewise deletes the previous
    ``best_*.pth`` before it saves the new one: a crash in between leaves no best
    checkpoint.

    The shim replaces ``_save_checkpoint_with_step`` with
    :func:`_save_checkpoint_with_step` (same bookkeeping, crash-safe order) and wraps
    ``_save_best_checkpoint`` so that its deletions run after it has saved
    (:func:`_remove_after_saving`). Subclasses that override a method keep theirs.
    """
    hook = module.CheckpointHook
    if hook.__dict__.get('_save_checkpoint_with_step') is not _save_checkpoint_with_step:
        hook._save_checkpoint_with_step = _save_checkpoint_with_step
    hook._save_best_checkpoint = _remove_after_saving(hook.__dict__['_save_best_checkpoint'])


# --------------------------------------------------------------------------- the list
SHIMS: Tuple[Shim, ...] = (
    *(Shim('weights_only', name, _patch_checkpoint_loading,
           reason='torch>=2.6 weights_only default; open-mmlab/mmengine#1655 (#1670 '
           'unpickles fully; mmssm loads safely instead)')
      for name in ('mmengine.runner.checkpoint', )),
    *(Shim('pkg_resources', name, _patch_package_utils,
           reason='setuptools>=82 has no pkg_resources; open-mmlab/mmengine#1676')
      for name in ('mmengine.utils.package_utils', 'mmengine.utils',
                   'mmengine.config.config', 'mmengine.hub.hub')),
    Shim('numpy_in1d', 'mmpretrain.evaluation.metrics.retrieval', _patch_in1d,
         reason='numpy>=2.4 removed in1d; numpy/numpy#29978'),
    *(Shim('torchvision_placeholder', name, None, around=_torchvision_placeholder,
           reason='mmpretrain 1.2.0 hard-imports torchvision in models/utils/box_utils, '
                  'evaluation/metrics/visual_grounding_eval and datasets/transforms/'
                  '{formatting,processing}; unfixed upstream')
      for name in ('mmpretrain.models.utils.box_utils',
                   'mmpretrain.evaluation.metrics.visual_grounding_eval',
                   'mmpretrain.datasets.transforms.formatting',
                   'mmpretrain.datasets.transforms.processing')),
    Shim('ssd_head_loss_cls', 'mmdet.models.dense_heads.ssd_head', _patch_ssd_head,
         reason='SSDHead has no loss_cls, read by predict; '
                'open-mmlab/mmdetection#11780, fix #11524'),
    *(Shim('atomic_save', name, _patch_save_checkpoint,
           reason='a crash while saving leaves a truncated .pth; no upstream issue')
      for name in ('mmengine.runner.checkpoint', 'mmengine.runner.runner',
                   'mmengine.runner')),
    Shim('checkpoint_order', 'mmengine.hooks.checkpoint_hook', _patch_checkpoint_hook,
         reason='max_keep_ckpts and save_best delete the old checkpoint before the new one '
                'is saved; '
                'no upstream issue'),
)


def apply() -> None:
    """Install every shim (idempotent). Patches already-imported modules at once and the
    others when they are first imported."""
    with _lock:
        if not any(getattr(f, '_mmssm_compat_finder', False) for f in sys.meta_path):
            sys.meta_path.insert(0, _ShimFinder())
        for shim in SHIMS:
            _install(shim)


def applied() -> Dict[str, List[str]]:
    """``{module name: [shim names]}`` for the shims that have patched a loaded module."""
    return {name: sorted(sys.modules[name].__dict__[_MARK])
            for name in sorted(_registry)
            if name in sys.modules and _MARK in sys.modules[name].__dict__}


apply()
