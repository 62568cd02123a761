"""Write the embedded demo datasets (deterministic, no download).

* ``<out>/coco``: COCO-format instance segmentation (``train``/``val`` images,
  ``annotations/instances_{train,val}.json``) with polygons and boxes.
* ``<out>/ade``: ADE20K-format semantic segmentation (``images/{training,validation}``,
  ``annotations/{training,validation}`` label PNGs; 0 = unlabeled, classes from 1, as
  ADE20K with ``reduce_zero_label=True``).
* ``<out>/imagenet``: ImageNet-layout classification (``{train,val}/<class>/*.png``,
  ``meta/{train,val}.txt`` with ``<class>/<file> <label>`` lines, the layout mmpretrain's
  ``ImageNet`` dataset reads), one shape per 64x64 image, the classes balanced.

Images are synthetic scenes of coloured shapes (circle, square, triangle) on shaded
backgrounds, so a small model learns them in minutes on a CPU.

    python tools/make_demo_data.py [--out data/demo] [--num-train 48] [--num-val 16]
        [--sets coco ade imagenet]
"""
import argparse
import json
import math
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle')
SEG_CLASSES = ('background', ) + CLASSES
IMAGE_SIZE = (160, 120)  # (width, height): non-square on purpose
PALETTE = [(220, 60, 50), (60, 170, 70), (60, 90, 220)]


def _shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float):
    if kind == 'circle':
        points = 24
        return [(cx + radius * math.cos(2 * math.pi * i / points),
                 cy + radius * math.sin(2 * math.pi * i / points)) for i in range(points)]
    corners = 4 if kind == 'square' else 3
    return [(cx + radius * math.cos(angle + 2 * math.pi * i / corners),
             cy + radius * math.sin(angle + 2 * math.pi * i / corners))
            for i in range(corners)]


def _background(rng: np.random.RandomState, width: int, height: int) -> Image.Image:
    base = rng.randint(90, 200, size=3)
    tilt = rng.uniform(-40, 40, size=3)
    ramp = np.linspace(-0.5, 0.5, width)[None, :, None] * tilt[None, None, :]
    ramp = ramp + np.linspace(-0.5, 0.5, height)[:, None, None] * tilt[None, None, ::-1]
    noise = rng.normal(0, 6, size=(height, width, 3))
    pixels = np.clip(base[None, None, :] + ramp + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, 'RGB')


def make_scene(rng: np.random.RandomState):
    """One image with 1-4 non-overlapping shapes; returns (image, label map, objects)."""
    width, height = IMAGE_SIZE
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    label = Image.new('L', (width, height), 1)  # 1 = background class (0 = unlabeled)
    label_draw = ImageDraw.Draw(label)
    objects, placed = [], []
    for _ in range(rng.randint(1, 5)):
        for _attempt in range(20):
            radius = rng.uniform(12, 30)
            cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
            if all(math.hypot(cx - x, cy - y) > radius + r + 4 for x, y, r in placed):
                break
        else:
            continue
        placed.append((cx, cy, radius))
        cls = rng.randint(len(CLASSES))
        polygon = _shape_polygon(CLASSES[cls], cx, cy, radius, rng.uniform(0, math.pi))
        color = tuple(int(np.clip(c + rng.randint(-25, 26), 0, 255)) for c in PALETTE[cls])
        draw.polygon(polygon, fill=color)
        label_draw.polygon(polygon, fill=cls + 2)
        objects.append((cls, polygon))
    return image, label, objects


def _coco_annotation(ann_id: int, image_id: int, cls: int, polygon, width: int, height: int):
    xs = [min(max(x, 0.0), width) for x, _ in polygon]
    ys = [min(max(y, 0.0), height) for _, y in polygon]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
    return dict(id=ann_id, image_id=image_id, category_id=cls + 1, iscrowd=0,
                bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                area=round(area, 2),
                segmentation=[[round(v, 2) for point in zip(xs, ys) for v in point]])


def write_split(out: str, split: str, num: int, seed: int) -> None:
    rng = np.random.RandomState(seed)
    coco_dir = osp.join(out, 'coco')
    ade_split = 'training' if split == 'train' else 'validation'
    for path in (osp.join(coco_dir, split), osp.join(coco_dir, 'annotations'),
                 osp.join(out, 'ade', 'images', ade_split),
                 osp.join(out, 'ade', 'annotations', ade_split)):
        os.makedirs(path, exist_ok=True)
    width, height = IMAGE_SIZE
    images, annotations = [], []
    for index in range(num):
        image, label, objects = make_scene(rng)
        name = f'{split}_{index:04d}'
        image.save(osp.join(coco_dir, split, name + '.png'))
        image.save(osp.join(out, 'ade', 'images', ade_split, name + '.png'))
        label.save(osp.join(out, 'ade', 'annotations', ade_split, name + '.png'))
        images.append(dict(id=index + 1, file_name=name + '.png', width=width, height=height))
        for cls, polygon in objects:
            annotations.append(_coco_annotation(len(annotations) + 1, index + 1, cls,
                                                polygon, width, height))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    with open(osp.join(coco_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


CLS_IMAGE_SIZE = 64


def make_shape_image(rng: np.random.RandomState, cls: int, size: int = CLS_IMAGE_SIZE):
    """A ``size`` x ``size`` image with one shape of class ``cls`` (random size, place,
    rotation and shade) on a shaded background."""
    image = _background(rng, size, size)
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    polygon = _shape_polygon(CLASSES[cls], cx, cy, radius, rng.uniform(0, math.pi))
    color = tuple(int(np.clip(c + rng.randint(-25, 26), 0, 255)) for c in PALETTE[cls])
    ImageDraw.Draw(image).polygon(polygon, fill=color)
    return image


def write_imagenet_split(out: str, split: str, num: int, seed: int) -> None:
    """``<out>/imagenet/<split>/<class>/<split>_NNNN.png`` and ``meta/<split>.txt``."""
    rng = np.random.RandomState(seed)
    root = osp.join(out, 'imagenet')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    lines = []
    for index in range(num):
        cls = index % len(CLASSES)  # balanced classes
        folder = osp.join(root, split, CLASSES[cls])
        os.makedirs(folder, exist_ok=True)
        name = f'{CLASSES[cls]}/{split}_{index:04d}.png'
        make_shape_image(rng, cls).save(osp.join(root, split, name))
        lines.append(f'{name} {cls}')
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


SETS = ('coco', 'ade', 'imagenet')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='output directory')
    parser.add_argument('--num-train', type=int, default=48)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--sets', nargs='+', choices=SETS, default=list(SETS),
                        help='which data sets to write (default: all; coco and ade share '
                        'their scenes and are written together)')
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be positive')
    if 'coco' in args.sets or 'ade' in args.sets:
        write_split(args.out, 'train', args.num_train, args.seed)
        write_split(args.out, 'val', args.num_val, args.seed + 1)
    if 'imagenet' in args.sets:
        write_imagenet_split(args.out, 'train', args.num_train, args.seed + 2)
        write_imagenet_split(args.out, 'val', args.num_val, args.seed + 3)
    print(f'demo data ({", ".join(args.sets)}) written to {args.out}: {args.num_train} train '
          f'/ {args.num_val} val images, classes {CLASSES}')


if __name__ == '__main__':
    main()
