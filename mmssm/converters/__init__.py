"""Official checkpoint / config converters for every mmssm backbone family."""
from .base import (FAMILIES, FamilyConverter, build_backbone, convert_official,
                   detect_families, from_official, get_family, load_backbone_weights,
                   load_state_dict_checked, official_backbone_state_dict, register_family)
from ..fileio import OpaqueObject, load_checkpoint_file
from .checkpoint import backbone_state_dict, extract_state_dict, strip_prefix

__all__ = [
    'FAMILIES', 'FamilyConverter', 'build_backbone', 'convert_official', 'detect_families',
    'from_official', 'get_family', 'load_backbone_weights', 'load_state_dict_checked',
    'official_backbone_state_dict', 'register_family', 'OpaqueObject',
    'backbone_state_dict', 'extract_state_dict', 'load_checkpoint_file', 'strip_prefix'
]
