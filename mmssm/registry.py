"""mmssm's registries: children of mmengine's root MODELS and HOOKS, scope ``mmssm``.

Configs of any OpenMMLab library refer to our modules as ``type='mmssm.VMamba'``;
mmengine resolves the ``mmssm.`` prefix through the root registry (importing
``mmssm.registry`` on demand), and ``locations`` imports the model modules lazily.
Nothing here imports mmdet, mmseg or mmpretrain.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmssm',
                  locations=['mmssm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmssm', locations=['mmssm.engine'])
