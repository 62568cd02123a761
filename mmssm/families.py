"""The one registry of mmssm's backbone families.

Every module that needs to know which families exist, which class builds a family's
backbone, which converter reads its official checkpoints or which preset to use by
default asks this registry; none keeps a list of its own. A family is one
:class:`Family` record: names of the backbone class and of the two modules that hold
the family's code (its backbone in ``mmssm.models`` and its converter in
``mmssm.converters``), plus the family's defaults.

This module imports nothing of mmssm when it is loaded. It names the modules as dotted
paths and imports them on first use (like mmengine's ``Registry(locations=...)``), so it
sits below every layer of the package (ops -> models -> converters -> apis -> tools)
and each layer can consult it:

* ``mmssm.models.backbones`` imports the backbone module of every family (which
  registers the class in :data:`mmssm.registry.MODELS`);
* a backbone's ``init_weights`` gets its family's converter from here to load an
  official checkpoint (:meth:`Family.converter`), without importing a converter itself;
* converters, analysis tools, benchmarks and tests list and build families through
  :func:`names`, :func:`get` and :func:`build_backbone`.

Adding a family is one :func:`register` call in this file plus the family's own two
modules (docs/adding_a_backbone.md).
"""
import importlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class Family:
    """One backbone family.

    Attributes:
        name: the family key (lower case), e.g. ``'vmamba'``; configs, converters and
            tools use it.
        backbone: the backbone's class name in :data:`mmssm.registry.MODELS`
            (configs write ``type='mmssm.<backbone>'``).
        backbone_module: dotted path of the module defining (and registering) it.
        converter_module: dotted path of the module whose ``CONVERTER``
            (:class:`mmssm.converters.FamilyConverter`) maps the official checkpoints
            and constructor arguments onto the backbone.
        default_preset: the preset used when only the family is named (benchmarks,
            examples): the smallest released variant.
        size_argument: constructor argument that fixes the input size, for families
            whose parameters depend on it (Vim's position embedding); None otherwise.
    """
    name: str
    backbone: str
    backbone_module: str
    converter_module: str
    default_preset: str
    size_argument: Optional[str] = None

    def backbone_class(self) -> type:
        """The backbone class (imports its module, which registers it)."""
        module = importlib.import_module(self.backbone_module)
        cls = getattr(module, self.backbone, None)
        if cls is None:
            raise ImportError(f'family {self.name!r}: {self.backbone_module} defines no '
                              f'{self.backbone!r}')
        return cls

    def converter(self) -> Any:
        """The family's :class:`~mmssm.converters.FamilyConverter` (module ``CONVERTER``)."""
        module = importlib.import_module(self.converter_module)
        converter = getattr(module, 'CONVERTER', None)
        if converter is None:
            raise ImportError(f'family {self.name!r}: {self.converter_module} defines no '
                              'CONVERTER')
        if getattr(converter, 'name', None) != self.name:
            raise ImportError(f'family {self.name!r}: {self.converter_module}.CONVERTER is '
                              f'the converter of {getattr(converter, "name", None)!r}')
        return converter

    @property
    def presets(self) -> Tuple[str, ...]:
        """Names of the backbone's ``arch_settings`` presets."""
        return tuple(self.backbone_class().arch_settings)


_FAMILIES: Dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family. Its name and backbone class name must be new."""
    if not isinstance(family, Family):
        raise TypeError(f'register() takes a Family, got {type(family).__name__}')
    if family.name != family.name.lower() or not family.name.isidentifier():
        raise ValueError(f'family name {family.name!r} must be a lower-case identifier')
    taken = [f.name for f in _FAMILIES.values()
             if f.name == family.name or f.backbone == family.backbone]
    if taken:
        raise ValueError(f'family {family.name!r} ({family.backbone}) clashes with the '
                         f'registered family {taken[0]!r}')
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> Family:
    """Remove a family (for tests that register a temporary one)."""
    return _FAMILIES.pop(get(name).name)


def names() -> Tuple[str, ...]:
    """The registered family names, in registration order."""
    return tuple(_FAMILIES)


def get(name: str) -> Family:
    """The family called ``name`` (its key, e.g. ``'vmamba'``)."""
    family = _FAMILIES.get(name)
    if family is None:
        raise ValueError(f'unknown family {name!r}; expected one of {names()}')
    return family


def find(type_name: str) -> Optional[Family]:
    """The family of a backbone given as family key, class name or config type
    (``'vim'``, ``'Vim'``, ``'mmssm.Vim'``); None when no family matches."""
    short = str(type_name).rsplit('.', 1)[-1]
    for family in _FAMILIES.values():
        if short in (family.name, family.backbone) or short.lower() == family.name:
            return family
    return None


def build_backbone(name: str, arch: Any = None, **kwargs) -> Any:
    """Build a family's backbone by family key or class name; ``arch`` as a preset name
    or dict (the class's default preset when None).

    The class is called directly: a build through the registry would follow mmengine's
    current default scope (mmdet/mmseg once a task model was built in this process).
    """
    family = find(name)
    if family is None:
        raise KeyError(f'unknown backbone {name!r}: give a family key {names()} or its '
                       f'class name {tuple(f.backbone for f in _FAMILIES.values())}')
    if arch is not None:
        kwargs['arch'] = arch
    return family.backbone_class()(**kwargs)


register(Family('vmamba', 'VMamba', 'mmssm.models.backbones.vmamba',
                'mmssm.converters.vmamba', default_preset='tiny_s1l8'))
register(Family('msvmamba', 'MSVMamba', 'mmssm.models.backbones.msvmamba',
                'mmssm.converters.msvmamba', default_preset='nano'))
register(Family('efficientvmamba', 'EfficientVMamba', 'mmssm.models.backbones.efficient_vmamba',
                'mmssm.converters.efficientvmamba', default_preset='tiny'))
register(Family('mobilemamba', 'MobileMamba', 'mmssm.models.backbones.mobilemamba',
                'mmssm.converters.mobilemamba', default_preset='t2'))
register(Family('vim', 'Vim', 'mmssm.models.backbones.vim', 'mmssm.converters.vim',
                default_preset='tiny', size_argument='img_size'))
