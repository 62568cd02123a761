"""Run an exported file on an image, finish it with the library's own post-processing.

    python tools/deployment/onnx_infer.py configs/retinanet_vmamba_t_1x.py retina.onnx \\
        demo.jpg --out vis.png
    python tools/deployment/onnx_infer.py configs/mask_rcnn_vmamba_t_1x.py mrcnn.onnx \\
        demo.jpg --checkpoint mrcnn.pth --out vis.png   # RoI heads in PyTorch

The image goes through the config's test pipeline and the model's data preprocessor; the
file computes its part (see docs/deployment.md) in ONNX Runtime or OpenVINO; mmdet /
mmseg / mmpretrain finish it exactly as ``model.predict`` does (decode + NMS + rescale,
logits resize + argmax, softmax + top-k). Detectors print and draw the boxes above
``--score-thr``, segmentors write the colour mask, classifiers print the top 5.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Inference with an exported ONNX file.')
    parser.add_argument('config', help='the config the file was exported from')
    parser.add_argument('file', help='the .onnx file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--checkpoint', help='checkpoint for the parts that run in PyTorch '
                        '(two-stage detectors\' RPN/RoI heads); must fit the config')
    parser.add_argument('--runtime', default='onnxruntime',
                        choices=['onnxruntime', 'openvino'])
    parser.add_argument('--threads', type=int, default=None, help='runtime threads')
    parser.add_argument('--out', help='write the visualisation here (detection boxes, '
                        'segmentation colour mask)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections: score threshold to print/draw')
    parser.add_argument('--topk', type=int, default=5, help='classifiers: classes to print')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle the checkpoint fully (only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value')
    return parser.parse_args(argv)


def dataset_meta(cfg, scope: str) -> dict:
    """classes/palette of the config's test dataset (for names and drawing)."""
    import importlib
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(scope)
    importlib.import_module(f'{scope}.datasets')  # registers the dataset classes
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    meta = dict(getattr(DATASETS.get(dataset.get('type', '')) or object, 'METAINFO', {}))
    meta.update(dataset.get('metainfo') or {})
    return meta


def run(args) -> list:
    from mmssm.deployment import RuntimeSession
    from mmssm.deployment.tasks import (build_model, predict_with_outputs, preprocess_image,
                                        task_kind)
    session = RuntimeSession(args.file, args.runtime, args.threads)
    meta = session.metadata
    if 'part' not in meta or 'structure' not in meta:
        raise ValueError(f'{args.file} has no mmssm metadata: export it with '
                         'tools/deployment/pytorch2onnx.py or mmssm.deployment.export_onnx')
    model, cfg, scope = build_model(args.config, args.checkpoint, args.cfg_options,
                                    args.trust_pickle)
    if meta.get('model_type') not in (None, type(model).__name__):
        raise ValueError(f'{args.file} holds a {meta["model_type"]}, but {args.config} '
                         f'builds a {type(model).__name__}')
    kind = task_kind(model)
    if kind == 'two_stage' and not args.checkpoint:
        print('onnx_infer: warning: no --checkpoint, the RPN/RoI heads (run in PyTorch) '
              'have random weights', file=sys.stderr)
    model.dataset_meta = dataset_meta(cfg, scope)
    data = preprocess_image(model, cfg, scope, args.image)
    samples = predict_with_outputs(model, meta['part'], meta['structure'], session,
                                   data['inputs'], data['data_samples'])
    report(kind, samples[0], model.dataset_meta, args)
    if args.out:
        draw(cfg, scope, args.image, samples[0], model.dataset_meta, args)
    return samples


def report(kind: str, sample, meta: dict, args) -> None:
    classes = meta.get('classes') or ()

    def name(label: int) -> str:
        return classes[label] if label < len(classes) else str(label)

    if kind in ('single_stage', 'two_stage'):
        pred = sample.pred_instances
        keep = pred.scores >= args.score_thr
        print(f'{int(keep.sum())} detections with score >= {args.score_thr} '
              f'({len(pred.scores)} in total)')
        for box, score, label in zip(pred.bboxes[keep], pred.scores[keep], pred.labels[keep]):
            print(f'  {name(int(label)):<16} {float(score):.3f}  '
                  f'[{", ".join(f"{v:.1f}" for v in box.tolist())}]')
    elif kind == 'segmentor':
        labels = sample.pred_sem_seg.data[0]
        values, counts = labels.unique(return_counts=True)
        order = counts.argsort(descending=True)[:10]
        print(f'segmentation {tuple(labels.shape)}; largest classes:')
        for i in order.tolist():
            print(f'  {name(int(values[i])):<16} {100.0 * counts[i].item() / labels.numel():.1f}%')
    elif kind == 'classifier':
        scores = sample.pred_score
        top = scores.topk(min(args.topk, scores.numel()))
        print(f'top-{len(top.indices)}:')
        for score, label in zip(top.values.tolist(), top.indices.tolist()):
            print(f'  {name(label):<24} {score:.4f}')


def draw(cfg, scope: str, image: str, sample, meta: dict, args) -> None:
    import mmcv
    from mmengine.registry import VISUALIZERS, init_default_scope
    init_default_scope(scope)
    vis_cfg = dict(cfg.get('visualizer') or {})
    if not vis_cfg:
        print('onnx_infer: the config has no visualizer; nothing drawn', file=sys.stderr)
        return
    vis_cfg.update(name=f'onnx_infer_{id(sample)}', vis_backends=None, save_dir=None)
    visualizer = VISUALIZERS.build(vis_cfg)
    if hasattr(visualizer, 'set_dataset_meta'):  # mmseg
        visualizer.set_dataset_meta(meta.get('classes'), meta.get('palette'))
    else:
        visualizer.dataset_meta = meta
    img = mmcv.imread(image, channel_order='rgb')
    kwargs = dict(pred_score_thr=args.score_thr) if scope == 'mmdet' else {}
    visualizer.add_datasample('onnx', img, data_sample=sample, draw_gt=False, show=False,
                              out_file=args.out, **kwargs)
    print(f'wrote {args.out}')


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        print(f'onnx_infer: error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
