"""mmssm end-to-end demo (``make demo``): train Mask R-CNN + MSVMamba from scratch on a
tiny embedded data set and show that it learns, on a CPU, in a few minutes.

Steps (each prints the command a user would type for it):

1. write the demo data set if missing (``tools/make_demo_data.py``);
2. evaluate the untrained model on val (``tools/test.py`` on its initial weights);
3. train it (``tools/train.py configs/demo/mask_rcnn_msvmamba_demo.py``);
4. evaluate the trained checkpoint (``tools/test.py``), dumping the predictions;
5. draw ground truth vs predictions of a few val images into a PNG;
6. print a summary: loss at the start vs the end of training, box/mask AP untrained vs
   trained, wall time. The exit status is 1 if the run did not show learning.

    python tools/demo.py                       # everything into work_dirs/demo
    python tools/demo.py --iters 100 --work-dir /tmp/demo
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_CONFIG = 'configs/demo/mask_rcnn_msvmamba_demo.py'
DATA_ROOT = 'data/demo'
TRAIN_LINE = re.compile(r'Iter\(train\) \[\s*(\d+)/(\d+)\].*?\blr: (\S+).*?eta: (\S+)\s+'
                        r'time: ([\d.]+).*?\bloss: ([\d.]+)(.*)')
LOSS_TERM = re.compile(r'(loss_\w+): ([\d.]+)')


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def banner(step: int, total: int, text: str) -> None:
    print(f'\n[{step}/{total}] {text}', flush=True)


def show_command(cmd) -> None:
    shown = ['python'] + [osp.relpath(c, ROOT) if osp.isabs(c) and c.startswith(ROOT) else c
                          for c in cmd[1:]]
    print('  $ ' + ' '.join(shown), flush=True)


def choose_threads(requested: int) -> Tuple[int, str]:
    """torch threads per process. 0 = auto: every core, unless the machine is already
    busy (1-minute load >= cores); then 1, because OpenMP threads that must wait for
    each other on oversubscribed cores make a step many times slower, not faster."""
    cores = os.cpu_count() or 1
    if requested > 0:
        return requested, 'from --threads'
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    if cores > 1 and load >= cores:
        return 1, f'the machine is busy: load {load:.1f} on {cores} cores'
    return cores, f'{cores} cores, load {load:.1f}'


THREADS = {'n': 0}


def run(cmd, log_path: str, on_line=None) -> None:
    """Run ``cmd`` from the repository root, saving its output to ``log_path``;
    ``on_line`` sees every output line. Raises with the log's tail on failure."""
    show_command(cmd)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               PYTHONWARNINGS='ignore')
    if THREADS['n']:
        env.update(OMP_NUM_THREADS=str(THREADS['n']), MKL_NUM_THREADS=str(THREADS['n']))
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    if code != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-40:])
        raise SystemExit(f'\ncommand failed (exit {code}); last lines of {log_path}:\n{tail}')


def newest(pattern: str) -> str:
    paths = glob.glob(pattern)
    if not paths:
        raise SystemExit(f'expected output not found: {pattern}')
    return max(paths, key=osp.getmtime)


def read_test_metrics(work_dir: str) -> dict:
    """Metrics that tools/test.py's logger dumped as <log_dir>/<timestamp>.json."""
    with open(newest(osp.join(work_dir, '*', '[0-9]*.json'))) as f:
        return json.load(f)


def print_ap(metrics: dict, indent: str = '  ') -> None:
    for kind in ('bbox', 'segm'):
        ap = metrics.get(f'coco/{kind}_mAP')
        ap50 = metrics.get(f'coco/{kind}_mAP_50')
        if ap is not None:
            print(f'{indent}{"box " if kind == "bbox" else "mask"} AP {ap:.3f}   '
                  f'AP50 {ap50:.3f}')


def evaluate(config: str, checkpoint: str, work_dir: str, extra=()) -> dict:
    os.makedirs(work_dir, exist_ok=True)
    run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, checkpoint,
         '--work-dir', work_dir, *extra], osp.join(work_dir, 'test_stdout.log'))
    metrics = read_test_metrics(work_dir)
    print_ap(metrics)
    return metrics


def save_untrained_checkpoint(config: str, work_dir: str, path: str) -> None:
    """The model exactly as tools/train.py starts it (same config, same seed, the same
    init_weights call), saved so tools/test.py can evaluate it."""
    import torch
    from mmengine.runner import Runner
    from mmssm.apis import load_config
    if THREADS['n']:
        torch.set_num_threads(THREADS['n'])
    cfg = load_config(config)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.log_level = 'WARNING'  # the Runner would print its whole environment and config
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    torch.save(dict(meta=dict(note='untrained (initial weights)', seed=runner.seed),
                    state_dict=runner.model.state_dict()), path)


# Drawing colours per class, chosen to stand out from the shapes' own colours.
VIS_COLORS = [(255, 215, 0), (0, 230, 255), (255, 0, 200), (255, 128, 0), (128, 255, 0)]


def draw_predictions(config: str, predictions_pkl: str, out_path: str, num_images: int = 6,
                     score_thr: float = 0.5, zoom: int = 2) -> int:
    """Ground truth (top row) vs predictions (bottom row) of the first val images:
    masks tinted, boxes and labels (with scores) in one colour per class."""
    import pickle

    import numpy as np
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    from mmssm.apis import load_config
    cfg = load_config(config)
    dataset = cfg.test_dataloader.dataset
    classes = dataset.metainfo['classes']
    palette = [VIS_COLORS[i % len(VIS_COLORS)] for i in range(len(classes))]
    with open(osp.join(dataset.data_root, dataset.ann_file)) as f:
        coco = json.load(f)
    with open(predictions_pkl, 'rb') as f:
        results = sorted(pickle.load(f), key=lambda r: r['img_id'])[:num_images]
    gts = {}
    for ann in coco['annotations']:
        gts.setdefault(ann['image_id'], []).append(ann)

    def tile(path, instances):
        image = Image.open(path).convert('RGB')
        width, height = image.size
        image = image.resize((width * zoom, height * zoom), Image.NEAREST)
        canvas = np.asarray(image, dtype=np.float32).copy()
        for label, _, box, mask in instances:
            if mask is not None:
                big = np.kron(mask, np.ones((zoom, zoom), dtype=mask.dtype)).astype(bool)
                canvas[big] = 0.45 * canvas[big] + 0.55 * np.array(palette[label])
        image = Image.fromarray(canvas.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for label, score, box, _ in instances:
            x0, y0, x1, y1 = [v * zoom for v in box]
            draw.rectangle([x0, y0, x1, y1], outline=palette[label], width=2)
            text = classes[label] + ('' if score is None else f' {score:.2f}')
            draw.rectangle([x0, max(y0 - 11, 0), x0 + 6 * len(text) + 2, max(y0 - 11, 0) + 11],
                           fill=palette[label])
            draw.text((x0 + 1, max(y0 - 11, 0)), text, fill=(0, 0, 0))
        return image

    rows = [[], []]
    for result in results:
        img_id = result['img_id']
        info = next(i for i in coco['images'] if i['id'] == img_id)
        height, width = info['height'], info['width']
        truth = []
        for ann in gts.get(img_id, []):
            rle = mask_utils.frPyObjects(ann['segmentation'], height, width)
            mask = mask_utils.decode(mask_utils.merge(rle))
            x, y, w, h = ann['bbox']
            truth.append((ann['category_id'] - 1, None, (x, y, x + w, y + h), mask))
        pred = result['pred_instances']
        found = []
        for i in range(len(pred['scores'])):
            score = float(pred['scores'][i])
            if score < score_thr:
                continue
            mask = mask_utils.decode(pred['masks'][i]) if 'masks' in pred else None
            found.append((int(pred['labels'][i]), score,
                          [float(v) for v in pred['bboxes'][i]], mask))
        rows[0].append(tile(result['img_path'], truth))
        rows[1].append(tile(result['img_path'], found))

    tile_w, tile_h = rows[0][0].size
    header = 16
    grid = Image.new('RGB', (tile_w * len(results), 2 * (tile_h + header)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, title in enumerate(('ground truth', f'predictions (score >= {score_thr})')):
        draw.text((4, r * (tile_h + header) + 2), title, fill=(0, 0, 0))
        for c, image in enumerate(rows[r]):
            grid.paste(image, (c * tile_w, r * (tile_h + header) + header))
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    grid.save(out_path)
    return len(results)


def train_losses(work_dir: str):
    """(iteration, loss) pairs logged by tools/train.py (vis_data/scalars.json)."""
    pairs = []
    with open(newest(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))) as f:
        for line in f:
            record = json.loads(line)
            if 'loss' in record and 'iter' in record:
                pairs.append((int(record['iter']), float(record['loss'])))
    return pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='demo config')
    parser.add_argument('--work-dir', default='work_dirs/demo', help='output folder')
    parser.add_argument('--iters', type=int, help='training iterations (default: the '
                        "config's train_cfg.max_iters)")
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads per process (default: all cores, or 1 when the '
                        'machine is already busy)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    config = args.config
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    os.chdir(ROOT)  # configs name data/demo relative to the repository root
    total = 6
    print('=' * 78)
    print('mmssm demo: Mask R-CNN with an MSVMamba backbone, trained from scratch on CPU')
    print(f'config   {config}')
    print(f'outputs  {osp.relpath(work_dir, os.getcwd())}')
    timings = {}
    THREADS['n'], why = choose_threads(args.threads)
    print(f'threads  {THREADS["n"]} per process ({why})')
    print('=' * 78)

    banner(1, total, 'Demo data (3 shape classes, 160x120 images)')
    t0 = time.time()
    if osp.exists(osp.join(ROOT, DATA_ROOT, 'coco', 'annotations', 'instances_val.json')):
        print(f'  {DATA_ROOT} exists, reusing it')
    else:
        run([sys.executable, osp.join(ROOT, 'tools', 'make_demo_data.py'), '--out',
             osp.join(ROOT, DATA_ROOT)], osp.join(work_dir, 'make_demo_data.log'),
            on_line=lambda line: print('  ' + line.rstrip()))
    timings['data'] = time.time() - t0

    banner(2, total, 'Evaluate the untrained model on val (its initial random weights)')
    t0 = time.time()
    untrained_ckpt = osp.join(work_dir, 'untrained.pth')
    save_untrained_checkpoint(config, osp.join(work_dir, 'untrained_init'), untrained_ckpt)
    before = evaluate(config, untrained_ckpt, osp.join(work_dir, 'eval_untrained'))
    timings['eval untrained'] = time.time() - t0

    banner(3, total, 'Train (loss every 10 iterations)')
    t0 = time.time()
    train_cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                 '--work-dir', work_dir]
    if args.iters:
        if args.iters < 10:
            raise SystemExit('--iters must be >= 10')
        train_cmd += ['--cfg-options', f'train_cfg.max_iters={args.iters}',
                      f'train_cfg.val_interval={args.iters}',
                      f'default_hooks.checkpoint.interval={args.iters}']

    def show_train_line(line):
        match = TRAIN_LINE.search(line)
        if match:
            it, max_it, lr, eta, sec, loss, rest = match.groups()
            terms = ' '.join(f'{k[5:]} {float(v):.3f}' for k, v in LOSS_TERM.findall(rest))
            print(f'  iter {int(it):4d}/{max_it}  loss {float(loss):.3f}  ({terms})  '
                  f'lr {float(lr):.1e}  {float(sec):.2f} s/iter  eta {eta}', flush=True)
        elif 'Error' in line or 'Traceback' in line:
            print('  ' + line.rstrip())

    run(train_cmd, osp.join(work_dir, 'train_stdout.log'), on_line=show_train_line)
    timings['train'] = time.time() - t0
    checkpoint = newest(osp.join(work_dir, 'iter_*.pth'))

    banner(4, total, f'Evaluate the trained model ({osp.basename(checkpoint)})')
    t0 = time.time()
    predictions = osp.join(work_dir, 'predictions.pkl')
    after = evaluate(config, checkpoint, osp.join(work_dir, 'eval_trained'),
                     extra=('--out', predictions))
    timings['eval trained'] = time.time() - t0

    banner(5, total, 'Draw predictions on val images')
    png = osp.join(work_dir, 'predictions.png')
    count = draw_predictions(config, predictions, png)
    print(f'  {count} val images, ground truth vs predictions -> '
          f'{osp.relpath(png, os.getcwd())}')

    banner(6, total, 'Summary')
    losses = train_losses(work_dir)
    (first_it, first_loss), (last_it, last_loss) = losses[0], losses[-1]
    wall = time.time() - start
    ap = {k: (before.get(f'coco/{k}_mAP', 0.0), after.get(f'coco/{k}_mAP', 0.0))
          for k in ('bbox', 'segm')}
    print('-' * 78)
    print(f'  training loss      iter {first_it}: {first_loss:.3f}  ->  iter {last_it}: '
          f'{last_loss:.3f}')
    print(f'  box AP  (val)      untrained {ap["bbox"][0]:.3f}  ->  trained {ap["bbox"][1]:.3f}')
    print(f'  mask AP (val)      untrained {ap["segm"][0]:.3f}  ->  trained {ap["segm"][1]:.3f}')
    print(f'  wall time          {wall / 60:.1f} min  (' + ', '.join(
        f'{k} {v:.0f} s' for k, v in timings.items()) + ')')
    print(f'  CPU time           {cpu_seconds() / 60:.1f} min  ({THREADS["n"]} torch '
          'thread(s) per process)')
    print(f'  outputs            {osp.relpath(work_dir, os.getcwd())}/ (checkpoint '
          f'{osp.basename(checkpoint)}, predictions.png, logs)')
    print('-' * 78)
    learned = (last_loss < first_loss and ap['bbox'][1] > ap['bbox'][0]
               and ap['segm'][1] > ap['segm'][0])
    if learned:
        print('  The model learned: the loss fell and val AP rose above the untrained model.')
    else:
        print('  WARNING: this run did not show learning (see the numbers above).')
    print('\nNext: the same tools run every config in configs/, e.g.')
    print(f'  python tools/test.py {config} {osp.relpath(checkpoint, ROOT)} --show-dir vis')
    print('  python tools/analysis_tools/get_flops.py configs/mask_rcnn_msvmamba_t_1x.py')
    print('  bash tools/dist_train.sh configs/mask_rcnn_msvmamba_t_1x.py 8')
    return 0 if learned else 1


if __name__ == '__main__':
    sys.exit(main())
