"""mmssm's registry: one child of mmengine's root MODELS, scope ``mmssm``.

Configs of any OpenMMLab library refer to our modules as ``type='mmssm.VMamba'``;
mmengine resolves the ``mmssm.`` prefix through the root registry (importing
``mmssm.registry`` on demand), and ``locations`` imports the model modules lazily.
Nothing here imports mmdet, mmseg or mmpretrain.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmssm',
                  locations=['mmssm.models'])
