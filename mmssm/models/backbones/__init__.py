"""The backbone of every family registered in :mod:`mmssm.families`: importing this
package imports each family's backbone module, which registers its class in
``mmssm.registry.MODELS``."""
import importlib

from mmssm import families

for _name in families.names():
    importlib.import_module(families.get(_name).backbone_module)
