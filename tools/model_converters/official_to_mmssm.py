"""Convert an official detector / segmentor checkpoint for evaluation with our configs.

    python tools/model_converters/official_to_mmssm.py --family vmamba --task det \
        mask_rcnn_vssm_fpn_coco_tiny_s_epoch_12.pth work_dirs/official/mask_rcnn_vmamba_t_1x.pth
    python tools/test.py configs/mask_rcnn_vmamba_t_1x.py \
        work_dirs/official/mask_rcnn_vmamba_t_1x.pth

The backbone goes through the family converter, neck and head tensors keep (mmdet 3.x /
mmseg 1.x / mmseg 0.x) or get (detectron2) the names our configs use; the result is
written only if it loads strictly into the model of the matching config (inferred from
family, task, head type and backbone shapes, or given with --config). Loading is safe by
default (weights_only + an allow-list of known upstream objects); --trust-pickle opts in
to full unpickling for trusted files. See docs/official_checkpoints.md.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmssm.converters.detseg import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
