"""MobileMamba's classifier (official ``BN_Linear`` head, optional distillation head)."""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead

from mmssm.registry import MODELS

Tensor = torch.Tensor


@MODELS.register_module()
class MobileMambaClsHead(ClsHead):
    """BatchNorm1d -> Linear on the pooled last-stage feature (official ``BN_Linear``).

    With ``distillation=True`` a second BN-linear ``dist_*`` runs on the same feature
    and the evaluation score is the mean of both, as the official model (LeViT/DeiT
    style) computes it. The released checkpoints (including the knowledge-distilled "†"
    ones, which distil into the main head) have no distillation head.

    The official ``fuse()`` folds the BatchNorm into the linear (:meth:`switch_to_deploy`);
    fused checkpoints (``head.weight``/``head.bias``) load into a head built with
    ``deploy=True``.

    Args:
        num_classes (int): number of classes.
        in_channels (int): C of the pooled feature (B, C).
        distillation (bool): add the distillation head (``dist_bn``, ``dist_fc``).
        deploy (bool): build the BN-fused layout (``fc`` only, with bias).
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of mmpretrain's ``ClsHead``.
        init_cfg (dict, optional): default: the official trunc-normal (std 0.02) linear
            weights with zero bias; BatchNorm keeps weight 1, bias 0.

    Input: tuple of features, the last one (B, in_channels) (after
    ``GlobalAveragePooling``). Output of :meth:`forward`: logits (B, num_classes).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 distillation: bool = False,
                 deploy: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = dict(
                     type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f'MobileMambaClsHead: num_classes must be a positive int, got '
                             f'{num_classes!r}')
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f'MobileMambaClsHead: in_channels must be a positive int, got '
                             f'{in_channels!r}')
        self.num_classes, self.in_channels = num_classes, in_channels
        self.distillation, self.deploy = distillation, deploy
        self.bn = nn.Identity() if deploy else nn.BatchNorm1d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
        if distillation:
            self.dist_bn = nn.Identity() if deploy else nn.BatchNorm1d(in_channels)
            self.dist_fc = nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        feat = feats[-1] if isinstance(feats, (tuple, list)) else feats
        if feat.dim() != 2 or feat.shape[1] != self.in_channels:
            raise ValueError(f'MobileMambaClsHead expects pooled features (B, '
                             f'{self.in_channels}), got {tuple(feat.shape)}; put '
                             "neck=dict(type='GlobalAveragePooling') before it")
        return feat

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        feat = self.pre_logits(feats)
        score = self.fc(self.bn(feat))
        if not self.distillation:
            return score
        if self.training:
            raise NotImplementedError(
                'MobileMambaClsHead: training with the distillation head needs a teacher '
                'model, which mmssm does not implement; build the head with '
                'distillation=False to train (the released checkpoints have no '
                'distillation head)')
        return (score + self.dist_fc(self.dist_bn(feat))) / 2

    @torch.no_grad()
    def switch_to_deploy(self) -> 'MobileMambaClsHead':
        """Fold each BatchNorm into the linear after it (official ``BN_Linear.fuse``):
        W' = W * s, b' = W (beta - mu * s) + b with s = gamma / sqrt(var + eps). Same
        outputs in eval mode; idempotent; returns ``self``."""
        if self.deploy:
            return self
        pairs = [('bn', 'fc')] + ([('dist_bn', 'dist_fc')] if self.distillation else [])
        for bn_name, fc_name in pairs:
            bn, fc = getattr(self, bn_name), getattr(self, fc_name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            fused = nn.Linear(fc.in_features, fc.out_features).to(fc.weight)
            fused.weight.copy_(fc.weight * scale[None, :])
            fused.bias.copy_(fc.weight @ shift + fc.bias)
            setattr(self, bn_name, nn.Identity())
            setattr(self, fc_name, fused)
        self.deploy = True
        return self
