"""What every mmssm backbone shares: arch presets, pretrained loading, freezing."""
import copy
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmssm import families
from mmssm.loading import RULE_KEYS, LoadRules

Tensor = torch.Tensor


def resolve_arch(arch: Union[str, Mapping[str, Any]], arch_settings: Mapping[str, Mapping],
                 required: Iterable[str], owner: str,
                 optional: Iterable[str] = ()) -> Dict[str, Any]:
    """Turn ``arch`` (a preset name or an explicit dict) into a settings dict.

    Raises ``ValueError`` for an unknown preset (listing the known ones) and for a dict
    with missing or unknown keys.
    """
    if isinstance(arch, str):
        if arch not in arch_settings:
            raise ValueError(f'{owner}: unknown arch {arch!r}; available presets: '
                             f'{", ".join(sorted(arch_settings))}, or pass a dict with '
                             f'keys {sorted(required)}')
        return copy.deepcopy(dict(arch_settings[arch]))
    if not isinstance(arch, Mapping):
        raise TypeError(f'{owner}: arch must be a preset name or a dict, got '
                        f'{type(arch).__name__}')
    required, optional = set(required), set(optional)
    missing = sorted(required - set(arch))
    unknown = sorted(set(arch) - required - optional)
    if missing or unknown:
        raise ValueError(f'{owner}: custom arch dict has missing keys {missing} and unknown '
                         f'keys {unknown}; required {sorted(required)}, optional '
                         f'{sorted(optional)}')
    return copy.deepcopy(dict(arch))


def check_out_indices(out_indices: Sequence[int], num_stages: int, owner: str) -> tuple:
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    out = []
    for index in out_indices:
        real = index + num_stages if index < 0 else index
        if not 0 <= real < num_stages:
            raise ValueError(f'{owner}: out_indices {tuple(out_indices)} out of range for '
                             f'{num_stages} stages')
        out.append(real)
    return tuple(out)


def checkpointed(block: nn.Module, *inputs: Any, with_cp: bool) -> Any:
    """``block(*inputs)``; with ``with_cp`` (and autograd on) its activations are
    recomputed in the backward instead of stored (saves memory at detection resolution).
    Non-reentrant checkpointing also covers blocks whose inputs need no grad (e.g. after
    frozen stages) but whose parameters do."""
    if with_cp and torch.is_grad_enabled():
        return cp.checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


def run_sequential(blocks: Iterable[nn.Module], x: Tensor, with_cp: bool) -> Tensor:
    """Apply blocks in order, each through :func:`checkpointed`."""
    for block in blocks:
        x = checkpointed(block, x, with_cp=with_cp)
    return x


def init_linear_and_layernorm(module: nn.Module) -> None:
    """The official from-scratch init of the VMamba family (``model.apply(...)``):
    truncated-normal (std 0.02) linears with zero bias (``Linear2d`` included), unit
    LayerNorms; convolutions, BatchNorms and the SSM parameters keep their own inits."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


#: keys of a backbone's ``init_cfg=dict(type='Pretrained', ...)``: mmengine's, then mmssm's
PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'revise_keys',
                   'trust_pickle', 'drop_classifier') + RULE_KEYS


def _revise_keys(value: Any, owner: str) -> Tuple[Tuple[str, str], ...]:
    """mmengine's ``revise_keys``: a list of ``(pattern, replacement)`` pairs."""
    if value is None:
        return ()
    pairs = tuple(tuple(pair) for pair in value) if isinstance(value, (list, tuple)) else None
    if pairs is None or not all(len(p) == 2 and all(isinstance(x, str) for x in p)
                                for p in pairs):
        raise TypeError(f"{owner}: revise_keys must be a list of (pattern, replacement) "
                        f"string pairs, e.g. [(r'^module\\.', '')], got {value!r}")
    return pairs


def pretrained_init_cfg(owner: str, pretrained: Optional[str],
                        init_cfg: Optional[Union[dict, list]]) -> Optional[Union[dict, list]]:
    """``pretrained`` as mmseg passes it (``EncoderDecoder(pretrained=...)`` sets
    ``backbone.pretrained``): None, or a path that becomes ``init_cfg=dict(type=
    'Pretrained', checkpoint=path)`` with mmseg's deprecation warning. Giving both is an
    error, as in mmseg's own backbones."""
    if pretrained is None:
        return init_cfg
    if not isinstance(pretrained, str):
        raise TypeError(f'{owner}: pretrained must be a str or None, got '
                        f'{type(pretrained).__name__}')
    if init_cfg is not None:
        raise ValueError(f'{owner}: pretrained and init_cfg cannot be set at the same time; '
                         "use init_cfg=dict(type='Pretrained', checkpoint=...)")
    warnings.warn('DeprecationWarning: pretrained is deprecated, please use "init_cfg" '
                  'instead', UserWarning, stacklevel=3)
    return dict(type='Pretrained', checkpoint=pretrained)


class SSMBackbone(BaseModule):
    """What every mmssm backbone promises (the contract of the five families).

    * ``forward`` returns a tuple, one map per selected output, in stage order;
      ``out_channels`` and ``out_strides`` (one entry per output) are set in
      ``__init__`` (:meth:`_set_outputs`), before any forward, so necks and heads can be
      configured and checked from them.
    * ``frozen_stages=k`` freezes the stem and the first ``k`` stages (mmdet's ResNet /
      Swin semantics: -1 freezes nothing, 0 the stem only); frozen modules stay in eval
      mode. Subclasses say what their stem and their stages are
      (:meth:`stem_modules`, :meth:`stage_modules`, :attr:`num_stages`) and call
      ``self._freeze_stages()`` at the end of their ``__init__``.
    * ``pretrained`` is accepted as mmseg passes it (:func:`pretrained_init_cfg`).
    * :meth:`init_weights` re-establishes the SSM-specific initialisation
      (:meth:`reset_ssm_parameters`) after any ``init_cfg`` -- a parent's (applied to the
      whole model first, e.g. mmpretrain's ``TruncNormal(layer='Linear', bias=0)``) or its
      own -- unless weights were loaded.

    Subclasses set ``family`` (their key in :mod:`mmssm.families`).

    ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` accepts an official checkpoint
    (converted on the fly) or an mmssm one, and what mmengine's ``Pretrained`` accepts:
    ``prefix`` selects a sub-module (e.g. ``'backbone.'`` of a detector checkpoint, found
    automatically when present), ``map_location`` (tensors are read on the CPU and
    copied into the parameters either way), ``revise_keys`` (``(pattern, replacement)``
    renames, as in ``mmengine.runner.load_checkpoint``). mmssm's additions:

    * ``trust_pickle=True``: full unpickling of this trusted file (safe loading
      otherwise, :mod:`mmssm.fileio`);
    * strict loading (:mod:`mmssm.loading`): every entry of the backbone must be filled
      with the right shape and every checkpoint entry used, unless declared:
      ``allow_missing`` / ``allow_unexpected`` / ``allow_resized`` (patterns of entry
      names), ``drop_classifier=True`` (the official ImageNet classifier the family
      converter removes), or ``strict=False`` (load what fits, warn about the rest).

    Loading errors are raised, never swallowed.
    """
    family: str = ''
    #: channels of each returned output, in ``forward``'s order (set in ``__init__``)
    out_channels: Tuple[int, ...] = ()
    #: input pixels per output pixel of each returned output (None: not a map)
    out_strides: Tuple[Optional[int], ...] = ()

    def __init__(self, frozen_stages: int = -1, norm_eval: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(
            init_cfg=pretrained_init_cfg(type(self).__name__, pretrained, init_cfg))
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int):
            raise TypeError(f'{type(self).__name__}: frozen_stages must be an int, got '
                            f'{frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    def _set_outputs(self, channels: Sequence[int], strides: Sequence[Optional[int]]) -> None:
        """Declare what ``forward`` returns: one (channels, stride) per output."""
        channels, strides = tuple(int(c) for c in channels), tuple(strides)
        if not channels:
            raise ValueError(f'{type(self).__name__}: out_indices must select at least one '
                             'output (an official wrapper\'s out_indices=(), returning the '
                             'last map channels-last, is not part of the backbone contract)')
        if len(channels) != len(strides):
            raise ValueError(f'{type(self).__name__}: {len(channels)} output channels but '
                             f'{len(strides)} strides')
        self.out_channels, self.out_strides = channels, strides

    # -- weights ---------------------------------------------------------------------
    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, Mapping) and cfg.get('type') == 'Pretrained':
            owner = f'{type(self).__name__} init_cfg'
            unknown = set(cfg) - set(PRETRAINED_KEYS)
            if unknown:
                raise ValueError(f'{owner}: unsupported Pretrained keys {sorted(unknown)}; '
                                 f'supported: {", ".join(PRETRAINED_KEYS)}')
            if not cfg.get('checkpoint'):
                raise ValueError(f"{owner}: Pretrained needs a 'checkpoint' path")
            self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix'),
                                 trust_pickle=cfg.get('trust_pickle', False),
                                 rules=LoadRules.from_cfg(cfg, owner),
                                 revise_keys=_revise_keys(cfg.get('revise_keys'), owner),
                                 drop_classifier=bool(cfg.get('drop_classifier', False)))
            self._is_init = True
            return
        super().init_weights()
        # A parent's init_cfg has already been applied to this module's layers (mmengine
        # initialises the parent first, then calls its children's init_weights), and so
        # may our own: re-draw what generic layer rules must not decide.
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        """The official from-scratch initialisation of the SSM parameters: every
        sub-module's ``reset_ssm_parameters()`` (dt projection weights and biases, A, D
        of each scan); families add their special parameters by overriding this."""
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_ssm_parameters'):
                module.reset_ssm_parameters()

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None,
                        trust_pickle: bool = False, strict: bool = True,
                        key: Optional[str] = None, **options) -> dict:
        """Load an official or mmssm checkpoint file into this backbone.

        The family's converter (found through :mod:`mmssm.families`) reads the file
        safely, recognises the official layout and converts it; the model itself knows
        no checkpoint layout. ``key`` picks the checkpoint entry holding the weights
        (e.g. ``'net_E'``, MobileMamba's EMA weights); found automatically by default.
        ``options`` (``rules``, ``revise_keys``, ``drop_classifier``) go to
        :func:`mmssm.converters.load_backbone_weights`; loading is strict by default.
        """
        converter = families.get(self.family).converter()
        return converter.load_checkpoint(self, checkpoint, prefix=prefix, key=key,
                                         trust_pickle=trust_pickle, strict=strict,
                                         **options)

    # -- freezing / norm_eval -------------------------------------------------------
    #: number of stages ``frozen_stages`` counts (set by subclasses)
    num_stages: int = 0

    def stem_modules(self) -> List[nn.Module]:
        """Modules frozen by ``frozen_stages >= 0``: ``patch_embed`` (every family's
        stem); override to add more."""
        return [self.patch_embed]

    def stage_modules(self, index: int) -> List[nn.Module]:
        """Modules of stage ``index``, frozen by ``frozen_stages > index``: by default
        ``layers[index]`` (with its trailing downsample) and its out-norm
        ``outnorm{index}`` if the stage is an output, as mmdet's Swin freezes ``norm{i}``;
        override for another layout."""
        modules = [self.layers[index]]
        if hasattr(self, f'outnorm{index}'):
            modules.append(getattr(self, f'outnorm{index}'))
        return modules

    def frozen_modules(self) -> List[nn.Module]:
        """The stem and stages ``0 .. frozen_stages - 1``."""
        modules = list(self.stem_modules()) if self.frozen_stages >= 0 else []
        for index in range(max(self.frozen_stages, 0)):
            modules.extend(self.stage_modules(index))
        return modules

    def _freeze_stages(self) -> None:
        if not -1 <= self.frozen_stages <= self.num_stages:
            raise ValueError(
                f'{type(self).__name__}: frozen_stages must be in [-1, {self.num_stages}] '
                '(-1: nothing, 0: the stem, k: the stem and the first k stages), got '
                f'{self.frozen_stages}')
        if self.frozen_stages < 0:
            return
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
