"""Official checkpoint / config converters for every mmssm backbone family.

Which families exist and which module converts each is :mod:`mmssm.families`' to say.
"""
from .base import (FamilyConverter, convert_official, detect_families, from_official,
                   get_converter, load_backbone_weights, load_state_dict_checked,
                   official_backbone_state_dict, state_dict_diff)
from ..fileio import OpaqueObject, load_checkpoint_file
from .checkpoint import backbone_state_dict, extract_state_dict, strip_prefix

__all__ = [
    'FamilyConverter', 'convert_official', 'detect_families', 'from_official',
    'get_converter', 'load_backbone_weights', 'load_state_dict_checked',
    'official_backbone_state_dict', 'state_dict_diff', 'OpaqueObject', 'backbone_state_dict',
    'extract_state_dict', 'load_checkpoint_file', 'strip_prefix'
]
