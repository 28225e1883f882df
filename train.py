"""Train one of the paper's networks with beta-LASSO or SGD, and report what the paper reports.

    python train.py --arch s_fc --beta 50                          # S-FC, beta-LASSO: the paper's run (GPU)
    python train.py --arch s_fc --alpha 4 --epochs 3 --beta 50     # a quick look on a CPU
    python train.py --resume runs/s_fc-blasso-a150                 # continue an interrupted run

A run writes config.json, metrics.jsonl (one line per epoch), checkpoint.npz (every --save-minutes),
curves.png, filters.png, filters-over-time.png and summary.json into its run directory (--out).
"""
import argparse
import contextlib
import fcntl
import json
import math
import os
import signal
import sys
import time
import zipfile
import zlib

import numpy as np
from tqdm import tqdm

import backend
import blasso
import data
import models
import report

S_ALPHA, D_ALPHA = 150, 15  # Table 1: the FC nets near 256M weights
RESNET_ALPHA = 64  # ResNet18's own base width
INTERRUPTED = 130  # the exit status of a run stopped by a signal after writing its checkpoint: resume it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
SYNC_EVERY = 10  # steps between reads of the device's loss and accuracy sums (progress bar, NaN guard)


def parse_args(argv):
    p = argparse.ArgumentParser(description='Train a D-*/S-*/3-FC network or ResNet18 with beta-LASSO or SGD (Neyshabur 2020).',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.error = lambda message: fail(message)  # one line, exit status 2, no usage dump
    # data
    p.add_argument('--dataset', default='cifar10',
                   help='cifar10, cifar100 or svhn; or nlgp and nlgp-gaussian, made: two classes of fields of two '
                        "correlation lengths, non-Gaussian or Gaussian with the same covariance (data.py)")
    p.add_argument('--nlgp-gain', type=float, default=data.NLGP_GAIN,
                   help='nlgp: the gain g of erf(g z / sqrt 2); near 0 Gaussian, large near-binary')
    p.add_argument('--nlgp-xi', type=float, nargs=2, default=list(data.NLGP_XI), metavar=('XI0', 'XI1'),
                   help="nlgp: the two classes' correlation lengths in pixels")
    p.add_argument('--data-dir', default=data.DATA_DIR, help='where datasets live ($BLASSO_DATA sets the default)')
    p.add_argument('--svhn-extra', action=argparse.BooleanOptionalAction, default=False, help='SVHN: train on train + extra')
    p.add_argument('--val-size', type=int, default=0, help='training images held out for validation (model selection)')
    p.add_argument('--train-size', type=int, default=None,
                   help='train on a seeded class-balanced subset of this many images (after the validation split)')
    p.add_argument('--augment', default='faa', choices=['faa', 'basic', 'none'],
                   help="faa: the paper's (App. A.2): the dataset's Fast AutoAugment policy, random crop (4-pixel "
                        "padding) and flip, Cutout; basic: crop and flip; none")
    p.add_argument('--cutout', action=argparse.BooleanOptionalAction, default=None,
                   help='Cutout after normalising (16 px CIFAR, 20 px SVHN); default: on with --augment faa only')
    p.add_argument('--permute-pixels', action=argparse.BooleanOptionalAction, default=False,
                   help='one fixed seeded pixel permutation for train and test')
    # model
    p.add_argument('--arch', default='s_fc', help=f"one of {', '.join(models.ARCHS)}")
    p.add_argument('--alpha', type=int, default=None,
                   help=f'base channels (default {S_ALPHA} for S-* and 3-FC, {D_ALPHA} for D-*, {RESNET_ALPHA} for ResNet18)')
    p.add_argument('--width', type=int, default=None, help="3-FC's hidden width (default: as many weights as S-FC)")
    p.add_argument('--kernel-size', type=int, default=3, help="ResNet18's kernel size, 3, 5, ..., 15 (Fig. 5)")
    p.add_argument('--dropout', type=float, default=0.0, help='dropout on the inputs of the last two FC layers')
    # optimization
    p.add_argument('--epochs', type=int, default=400, help='epochs (Table 2 uses 4000)')
    p.add_argument('--batch-size', type=int, default=512, help='batch size')
    p.add_argument('--lr', type=float, default=0.1, help='initial learning rate, cosine-annealed to 0')
    p.add_argument('--beta', type=float, default=None, help='beta-LASSO threshold coefficient (paper: 50); omit for SGD')
    p.add_argument('--lam-conv', type=float, default=2e-5, help='beta-LASSO l1 lambda of the convolution-like layer(s)')
    p.add_argument('--lam-fc', type=float, default=5e-6, help='beta-LASSO l1 lambda of the other weight matrices')
    p.add_argument('--momentum', type=float, default=0.9, help='SGD momentum (beta-LASSO uses none, App. A.2)')
    p.add_argument('--weight-decay', type=float, default=5e-4, help='SGD weight decay')
    p.add_argument('--seed', type=int, default=0, help='seed of the weights, the split and every batch')
    p.add_argument('--mask', default=None, metavar='NPZ',
                   help="hold weights at zero: 0/1 arrays named as the model's parameters (prune.py writes them); "
                        "the others start from the seed's initial values")
    # system and logging
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'gpu'], help='gpu needs CuPy and a GPU')
    p.add_argument('--tf32', action=argparse.BooleanOptionalAction, default=False,
                   help='GPU: matrix products on TF32 tensor cores (inputs rounded to 10-bit mantissas, float32 '
                        'sums and storage; CUPY_TF32=1); the paper trained in 16 bits')
    p.add_argument('--out', default=None, help='run directory (default runs/ARCH-OPTIMIZER-aALPHA)')
    p.add_argument('--resume', default=None, metavar='DIR', help="continue the run in DIR with its saved configuration")
    p.add_argument('--save-minutes', type=float, default=10.0,
                   help='minutes of training between checkpoints and curves (0: every epoch); the last epoch and '
                        'Ctrl-C, SIGTERM and SIGUSR2 always save')
    p.add_argument('--save-every', type=int, default=None, help='also checkpoint every N epochs')
    p.add_argument('--eval-every', type=int, default=1,
                   help='epochs between validation and test evaluations (the last epoch always); small training sets '
                        'spend most of an epoch evaluating')
    p.add_argument('--quiet', action='store_true', help='no progress bars: one line per epoch, for logs')
    args = p.parse_args(argv)
    if args.resume:
        return args
    if args.arch not in models.ARCHS:
        fail(f"unknown arch {args.arch!r}; choose one of {', '.join(models.ARCHS)}")
    if args.dataset not in data.DATASETS:
        fail(f"unknown dataset {args.dataset!r}; choose one of {', '.join(data.DATASETS)}")
    if args.nlgp_gain < 0 or min(args.nlgp_xi) <= 0:
        fail(f'--nlgp-gain must be >= 0 and --nlgp-xi > 0, got {args.nlgp_gain:g} and {args.nlgp_xi}')
    if args.alpha is None:
        args.alpha = D_ALPHA if args.arch.startswith('d_') else RESNET_ALPHA if args.arch == 'resnet18' else S_ALPHA
    check_ranges(args)
    optimizer = 'sgd' if args.beta is None else 'blasso'
    args.out = args.out or os.path.join('runs', f'{args.arch}-{optimizer}-a{args.alpha}')
    return args


# every numeric flag and the values it may take: (test, in words); None means "not given"
RANGES = {
    'alpha': (lambda v: v > 0, 'positive'), 'width': (lambda v: v is None or v > 0, 'positive'),
    'epochs': (lambda v: v > 0, 'positive'), 'batch_size': (lambda v: v > 0, 'positive'),
    'save_every': (lambda v: v is None or v > 0, 'positive'), 'save_minutes': (lambda v: v >= 0, '0 or more'), 'eval_every': (lambda v: v > 0, 'positive'), 'val_size': (lambda v: v >= 0, '0 or more'),
    'train_size': (lambda v: v is None or v > 0, 'positive'), 'lr': (lambda v: v > 0, 'positive'),
    'kernel_size': (lambda v: v > 0 and v % 2 == 1, 'odd and positive'),
    'beta': (lambda v: v is None or v >= 0, '0 or more'), 'lam_conv': (lambda v: v >= 0, '0 or more'),
    'lam_fc': (lambda v: v >= 0, '0 or more'), 'momentum': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'weight_decay': (lambda v: v >= 0, '0 or more'), 'dropout': (lambda v: 0 <= v < 1, 'in [0, 1)'),
}


def check_ranges(args):
    """Every numeric flag finite and in its range, or a one-line error (--lr nan, --beta -5, ...)."""
    for name, (ok, words) in RANGES.items():
        value = getattr(args, name)
        if value is not None and (not math.isfinite(value) or not ok(value)):
            fail(f'--{name.replace("_", "-")} must be finite and {words}, got {value}')


def fail(message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def save_checkpoint(path, model, velocity, config, progress, masks=None):
    """Every array to host memory, into an npz written under a temporary name and renamed, so
    an interrupted write never replaces the last good checkpoint; the one before is kept as
    checkpoint.prev.npz, for when the newest is damaged after all (a full disk, a copy cut short)."""
    arrays = {f'param/{name}': backend.to_numpy(p) for name, p, _ in model.params()}
    arrays.update({f'buffer/{name}': backend.to_numpy(b) for name, b in model.buffers()})
    arrays.update({f'velocity/{name}': backend.to_numpy(v) for name, v in velocity.items()})
    arrays.update({f'mask/{name}': backend.to_numpy(m) for name, m in (masks or {}).items()})
    arrays['config'], arrays['progress'] = np.array(json.dumps(config)), np.array(json.dumps(progress))
    with open(path + '.tmp', 'wb') as f:
        np.savez(f, **arrays)
    if os.path.exists(path):
        os.replace(path, previous(path))
    os.replace(path + '.tmp', path)


def previous(path):
    return path.replace('.npz', '.prev.npz')


def load_checkpoint(run_dir):
    """The newest readable checkpoint of run_dir as a dict of arrays, falling back to the one
    before it (saying so) when the newest is damaged or missing; a one-line error if neither loads."""
    path = os.path.join(run_dir, 'checkpoint.npz')
    problems = []
    for candidate in (path, previous(path)):
        if not os.path.exists(candidate):
            problems.append(f'{candidate} does not exist')
            continue
        try:
            with np.load(candidate, allow_pickle=False) as npz:
                checkpoint = {key: npz[key] for key in npz.files}  # reads every array: damage shows here
            json.loads(str(checkpoint['config'])), json.loads(str(checkpoint['progress']))
        except (zipfile.BadZipFile, zlib.error, ValueError, KeyError, OSError, EOFError) as e:
            problems.append(f'{candidate} is damaged ({type(e).__name__}: {str(e)[:80]})')
            continue
        if problems:
            print(f'warning: {problems[0]}; resuming from the previous checkpoint, {candidate}', file=sys.stderr)
        return checkpoint
    if problems[0].endswith('does not exist') and problems[1].endswith('does not exist'):
        fail(f'{run_dir} holds no checkpoint.npz to resume from')
    fail('cannot resume: ' + '; '.join(problems))


def main(argv=None):
    """One run, as a recipe: each step is a function below, in this order."""
    args = parse_args(argv)
    with one_writer(args.resume or args.out):
        args, config, checkpoint = open_run(args)
        xp = array_module(args)
        batches = load_data(args, xp)
        model, groups = build_model(args, xp, batches)
        masks = load_masks(args, model, checkpoint, xp)
        velocity, progress, metrics = restore(args, config, model, checkpoint, xp)
        interrupted, release_signals = catch_stop_signals()
        saved_at = [time.monotonic()]  # when the last checkpoint was written, or the run (re)started
        try:
            with np.errstate(over='ignore', invalid='ignore'):  # divergence is reported by the NaN guard
                for epoch in range(progress['epoch'], args.epochs):
                    if not train_epoch(args, model, batches, groups, velocity, progress, epoch, interrupted, masks):
                        return 1  # the loss is not finite: no checkpoint is written
                    if interrupted:
                        save_checkpoint(checkpoint_path(args), model, velocity, config, progress, masks)
                        print(f'\ninterrupted ({signal.Signals(interrupted[0]).name}) at epoch {epoch + 1}, step '
                              f'{progress["step"]}; checkpoint written.\ncontinue with: python train.py --resume {args.out}')
                        return INTERRUPTED
                    progress = end_epoch(args, config, model, batches, velocity, progress, metrics, epoch, saved_at, masks)
        finally:
            release_signals()
        report.summarize(args, model, metrics, len(batches['train'].labels))
        return 0


def open_run(args):
    """1. The run directory: a new run, or the one being resumed with its saved configuration.
    Returns (args, config, checkpoint or None)."""
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        config = json.loads(str(checkpoint['config']))
        if 'augment' not in config:  # an older version's configuration: crop, flip and cutout switches
            config['augment'] = 'basic' if config.get('crop', True) or config.get('flip', True) else 'none'
        config.update(resume=args.resume, quiet=args.quiet, device=args.device, out=args.resume)
        args = argparse.Namespace(**{**vars(parse_args([])), **config})  # defaults for flags added since
        check_ranges(args)
    elif os.path.exists(checkpoint_path(args)):
        fail(f'{args.out} already holds a run; continue it with --resume {args.out}, or choose another --out')
    os.makedirs(args.out, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ('resume',)}
    return args, config, checkpoint


def checkpoint_path(args):
    return os.path.join(args.out, 'checkpoint.npz')


def array_module(args):
    """2. numpy, or cupy on a GPU: arrays carry their backend from here on."""
    if args.device == 'gpu' and not backend.gpu_available():
        fail("--device gpu needs CuPy and a visible GPU (pip install 'cupy-cuda12x[ctk]'; nvidia-smi shows the GPU, "
             "python -c 'import cupy; cupy.ones(1) + 1' checks the toolkit); use --device cpu")
    xp = backend.cupy if args.device != 'cpu' and backend.gpu_available() else np
    if args.tf32 and xp is np:
        print('note: --tf32 changes nothing on a CPU')
    elif args.tf32:
        os.environ['CUPY_TF32'] = '1'  # CuPy reads it at its first matrix product, which comes after this
    return xp


def load_data(args, xp):
    """3. The splits as Loaders that move images to the device, where augmentation runs:
    {'train', 'val' (None without --val-size), 'test'}."""
    try:
        x_train, y_train, x_test, y_test = data.load(args.dataset, args.data_dir, extra=args.svhn_extra,
                                                     xi=tuple(args.nlgp_xi), gain=args.nlgp_gain)
        x_train, y_train, x_val, y_val = data.split_validation(x_train, y_train, args.val_size, args.seed)
        if args.train_size is not None:
            keep = data.balanced_subset(y_train, args.train_size, args.seed)
            x_train, y_train = x_train[keep], y_train[keep]
    except data.DataError as e:
        fail(str(e))
    if args.batch_size > len(x_train):
        fail(f'--batch-size {args.batch_size} is larger than the {len(x_train)} training images')
    spec = data.DATASETS[args.dataset]
    mean, std = data.channel_stats(x_train)
    permutation = data.pixel_permutation(args.seed) if args.permute_pixels else None
    cutout = args.cutout if args.cutout is not None else args.augment == 'faa'
    augment = dict(policy=spec['policy'] if args.augment == 'faa' else None, cutout=spec['cutout'] if cutout else 0,
                   # runs written before --augment recorded crop and flip apart
                   crop=vars(args).get('crop', args.augment != 'none'), flip=vars(args).get('flip', args.augment != 'none'))
    loader = lambda x, y, train: data.Loader(  # noqa: E731
        x, y, args.batch_size, xp, mean, std, train=train, seed=args.seed, permutation=permutation, **augment)
    print(f'device: {"GPU (CuPy)" if xp is not np else "CPU (NumPy)"}; data: {args.dataset}, '
          f'{len(x_train)} train / {len(x_val)} val / {len(x_test)} test; augmentation: '
          f'{augment["policy"] or "no policy"}, crop {augment["crop"]}, flip {augment["flip"]}, '
          f'Cutout {augment["cutout"] or "off"}; run directory: {args.out}')
    return dict(train=loader(x_train, y_train, True), val=loader(x_val, y_val, False) if len(x_val) else None,
                test=loader(x_test, y_test, False))


def build_model(args, xp, batches):
    """4. The model on the device, and beta-LASSO's parameter groups (None for SGD). On a CPU, a
    net too large for it says so before the first step."""
    model = models.build(args.arch, args.alpha, num_classes=data.DATASETS[args.dataset]['num_classes'],
                         seed=args.seed, width=args.width, dropout=args.dropout, kernel_size=args.kernel_size)
    models.to_device(model, xp)
    print(model)
    groups = None
    if args.beta is not None:
        groups = blasso.param_groups(model, args.lam_conv, args.lam_fc)
        print(f'optimizer: beta-LASSO, beta {args.beta:g}, no momentum, lr {args.lr:g} cosine')
    else:
        print(f'optimizer: SGD, momentum {args.momentum:g}, weight decay {args.weight_decay:g}, lr {args.lr:g} cosine')
    if xp is not np:  # on a GPU: what the run will cost, before it starts
        print(cost_line(args, model, len(batches['train'])))
    else:
        step_flops = 6 * models.macs_per_image(model) * args.batch_size
        a = np.ones((1024, 1024), np.float32)
        t0 = time.perf_counter()
        a @ a
        estimate = len(batches['train']) * step_flops / (2 * 1024 ** 3 / (time.perf_counter() - t0))
        if estimate > 120:
            print(f'note: on this CPU an epoch takes at least {estimate / 60:.0f} min ({step_flops / 1e9:.0f} GFLOP per step); '
                  f'for a quick look: python train.py --arch {args.arch} --alpha 4 --epochs 3' +
                  (f' --beta {args.beta:g}' if groups is not None else ''))
    return model, groups


def cost_line(args, model, steps_per_epoch):
    """Training FLOPs (6 per multiply-add and image), time at reproduce.py's assumed GPU rate,
    and the disk the checkpoints take (the newest and the one before; SGD's velocity doubles it)."""
    from reproduce import GPU_TFLOPS
    epoch_flops = 6 * models.macs_per_image(model) * args.batch_size * steps_per_epoch
    seconds = epoch_flops / GPU_TFLOPS / 1e12
    velocity = args.beta is None and args.momentum > 0
    disk = 2 * 4 * model.num_params() * (1 + velocity)
    return (f'cost: {epoch_flops:.3g} FLOP an epoch; at an assumed {GPU_TFLOPS:g} TFLOP/s {seconds:.3g} s an epoch, '
            f'{seconds * args.epochs / 3600:.3g} h for {args.epochs} epochs; checkpoints {disk / 1e9:.3g} GB, '
            f'written every {args.save_minutes:g} minutes of training')


def load_masks(args, model, checkpoint, xp):
    """4b. {parameter name: 0/1 array} of the weights held at zero (--mask), or {}. A resumed run
    takes them from its checkpoint; a new one from the file, and zeroes the pruned weights of the
    freshly built net, so that the survivors start from the seed's initial values (IMP's rewind)."""
    if checkpoint is not None:
        return {k[len('mask/'):]: xp.asarray(v) for k, v in checkpoint.items() if k.startswith('mask/')}
    if not args.mask:
        return {}
    try:
        with np.load(args.mask) as npz:
            saved = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        fail(f'--mask {args.mask}: cannot read it ({type(e).__name__}: {str(e)[:80]})')
    params = {name: p for name, p, _ in model.params()}
    for name, m in saved.items():
        if name not in params or m.shape != params[name].shape or not np.isin(m, (0, 1)).all():
            fail(f'--mask {args.mask}: {name} is not a 0/1 array shaped as one of this model\'s parameters')
    masks = {name: xp.asarray(m, dtype=params[name].dtype) for name, m in saved.items()}
    for name, m in masks.items():
        params[name] *= m
    print(f'mask: {sum(int(m.sum()) for m in saved.values()):,} of {sum(m.size for m in saved.values()):,} weights kept '
          f'in {", ".join(saved)}')
    return masks


def restore(args, config, model, checkpoint, xp):
    """5. (velocity, progress, metrics): fresh, or the checkpoint's. metrics.jsonl keeps the
    epochs the checkpoint has seen and drops any later line."""
    velocity = {}
    progress = dict(epoch=0, step=0, loss_sum=0.0, correct=0, seen=0, seconds=0.0)
    if checkpoint is not None:
        for name, p, _ in model.params():
            saved = checkpoint.get(f'param/{name}')
            if saved is None or saved.shape != p.shape:  # e.g. an older version's channels-first conv
                fail(f'{args.resume} was written by another version of blasso ({name} differs); start a new run')
            p[...] = xp.asarray(saved)
        for name, b in model.buffers():
            b[...] = checkpoint[f'buffer/{name}'] if isinstance(b, np.ndarray) else xp.asarray(checkpoint[f'buffer/{name}'])
        velocity = {k[len('velocity/'):]: xp.asarray(v) for k, v in checkpoint.items() if k.startswith('velocity/')}
        progress = json.loads(str(checkpoint['progress']))
        print(f'resuming at epoch {progress["epoch"] + 1}, step {progress["step"]}')
    else:
        report.add_filter_snapshot(model, args.out, 0, seed=args.seed)  # the initial weights
    metrics_path = os.path.join(args.out, 'metrics.jsonl')
    metrics = []
    if checkpoint is not None and os.path.exists(metrics_path):
        metrics = [json.loads(line) for line in open(metrics_path)][:progress['epoch']]
    with open(metrics_path, 'w') as f:
        f.writelines(json.dumps(m) + '\n' for m in metrics)
    with open(os.path.join(args.out, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
    return velocity, progress, metrics


def catch_stop_signals():
    """Ctrl-C, and SIGTERM / SIGUSR2 (what Slurm and submitit send before a time limit or a
    preemption), ask the loop to stop after the current step and checkpoint; a second Ctrl-C
    stops at once, a repeated SIGTERM / SIGUSR2 changes nothing. Returns (the signals caught so
    far, a function that puts the previous handlers back)."""
    interrupted = []

    def on_interrupt(signum, frame):
        if interrupted and signum == signal.SIGINT:
            raise KeyboardInterrupt
        interrupted.append(signum)
    previous_handlers = {sig: signal.signal(sig, on_interrupt) for sig in STOP_SIGNALS}

    def release():
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    return interrupted, release


def get_lr(args, step, steps_per_epoch):
    """Cosine annealing from --lr to 0 over the whole run, per step (App. A.2)."""
    return 0.5 * args.lr * (1 + math.cos(math.pi * step / (steps_per_epoch * args.epochs)))


def train_epoch(args, model, batches, groups, velocity, progress, epoch, interrupted, masks=None):
    """6. One epoch from progress['step'] on: lr -> batch -> forward -> loss -> backward ->
    update. The epoch's loss and correct count are summed on the device and read (a sync point,
    and the NaN guard) every SYNC_EVERY steps and at the end. Stops early when a stop signal
    arrives. Returns False when the loss is not finite."""
    xp = batches['train'].xp
    steps = len(batches['train'])
    start_step = progress['step']
    bar = tqdm(batches['train'].epoch(epoch, start_step), total=steps, initial=start_step,
               desc=f'epoch {epoch + 1}/{args.epochs}', disable=args.quiet, leave=False)
    t0 = time.perf_counter()
    loss_sum = xp.asarray(progress['loss_sum'], dtype=np.float64)
    correct = xp.asarray(progress['correct'], dtype=np.int64)
    for step, (x, y) in enumerate(bar, start_step):
        lr = get_lr(args, epoch * steps + step, steps)
        logits = model.forward(x, train=True)
        loss, dlogits = models.softmax_cross_entropy(logits, y)
        model.backward(dlogits, need_dx=False)
        if groups is not None:
            blasso.blasso_step(groups, lr, args.beta)
        else:
            blasso.sgd_step(model.params(), lr, args.momentum, args.weight_decay, velocity)
        if masks:  # pruned weights stay exactly zero, whatever the update did
            for name, p, _ in model.params():
                if name in masks:
                    p *= masks[name]
        loss_sum += loss.astype(np.float64) * len(y)
        correct += (logits.argmax(axis=1) == y).sum()
        progress['seen'] += len(y)
        progress['step'] = step + 1
        if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps or interrupted:
            progress['loss_sum'], progress['correct'] = float(loss_sum), int(correct)  # sync point
            if not math.isfinite(progress['loss_sum']):
                path = checkpoint_path(args)
                print(f'error: the loss is {progress["loss_sum"]} by epoch {epoch + 1}, step {step + 1}: lower --lr; '
                      + (f'the last good checkpoint is {path}' if os.path.exists(path) else 'no checkpoint was written'),
                      file=sys.stderr)
                return False
            images_per_s = (step + 1 - start_step) * len(y) / (time.perf_counter() - t0)
            bar.set_postfix(loss=f'{progress["loss_sum"] / progress["seen"]:.3f}',
                            acc=f'{progress["correct"] / progress["seen"]:.3f}', img_s=f'{images_per_s:,.0f}')
        if interrupted:
            break
    progress['seconds'] += time.perf_counter() - t0
    return True


def evaluate(model, batches):
    """(mean loss, accuracy) on a split, summed on the device and read once (a sync point)."""
    xp = batches.xp
    loss_sum, correct = xp.zeros((), np.float64), xp.zeros((), np.int64)
    for x, y in batches.epoch(0):
        logits = model.forward(x, train=False)
        loss, _ = models.softmax_cross_entropy(logits, y)
        loss_sum += loss.astype(np.float64) * len(y)
        correct += (logits.argmax(axis=1) == y).sum()
    n = len(batches.labels)
    return float(loss_sum) / n, int(correct) / n


def end_epoch(args, config, model, batches, velocity, progress, metrics, epoch, saved_at, masks=None):
    """7. Evaluate (every --eval-every epochs and the last), count non-zeros (Fig. 3), append
    to metrics.jsonl, snapshot the first layer's filters at a few epochs (filters-over-time.png),
    and checkpoint when save_due (saved_at[0]: when the last was written). Returns the next
    epoch's fresh progress."""
    steps = len(batches['train'])
    scored = (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs
    test_loss, test_acc = evaluate(model, batches['test']) if scored else (None, None)
    val_loss, val_acc = evaluate(model, batches['val']) if batches['val'] and scored else (None, None)
    line = dict(epoch=epoch + 1, lr=get_lr(args, (epoch + 1) * steps, steps),
                train_loss=progress['loss_sum'] / progress['seen'], train_acc=progress['correct'] / progress['seen'],
                val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc,
                nonzero=blasso.count_nonzero(model), seconds=progress['seconds'],
                images_per_s=progress['seen'] / max(progress['seconds'], 1e-9))
    metrics.append(line)
    with open(os.path.join(args.out, 'metrics.jsonl'), 'a') as f:
        f.write(json.dumps(line) + '\n')
    tqdm.write(f'epoch {epoch + 1:4d} | lr {line["lr"]:.4f} | train loss {line["train_loss"]:.4f} '
               f'acc {line["train_acc"]:.4f} | ' + (f'val acc {val_acc:.4f} | ' if val_acc is not None else '') +
               (f'test loss {test_loss:.4f} acc {test_acc:.4f} | ' if scored else '') +
               f'non-zero {line["nonzero"]["total"]:,} | {line["seconds"]:.1f} s, {line["images_per_s"]:,.0f} img/s')
    if epoch + 1 in report.snapshot_epochs(args.epochs):
        report.add_filter_snapshot(model, args.out, epoch + 1, seed=args.seed)
    progress = dict(epoch=epoch + 1, step=0, loss_sum=0.0, correct=0, seen=0, seconds=0.0)
    if save_due(args, epoch, (time.monotonic() - saved_at[0]) / 60):
        save_checkpoint(checkpoint_path(args), model, velocity, config, progress, masks)
        saved_at[0] = time.monotonic()
        report.save_curves(metrics, report.reference_sizes(args.alpha), os.path.join(args.out, 'curves.png'))
    return progress


@contextlib.contextmanager
def one_writer(run_dir):
    """Hold the run directory for this process alone: an exclusive flock on run_dir/lock, which
    the OS releases when the process ends, so a killed run leaves no stale lock. A second
    writer (the same command started twice, a requeued job while the old one still writes)
    stops at once, naming the holder."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'lock'), 'a+') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            fail(f'{run_dir} is being written by another process (pid {lock.read().strip() or "unknown"}); '
                 f'wait for it to end, or choose another --out')
        lock.seek(0)
        lock.truncate()
        lock.write(f'{os.getpid()}\n')
        lock.flush()
        yield


def holder(run_dir):
    """The pid holding run_dir (as a string), or None when no process writes it."""
    path = os.path.join(run_dir, 'lock')
    if not os.path.exists(path):
        return None
    with open(path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or 'unknown'
    return None


def save_due(args, epoch, minutes):
    """Whether to checkpoint after `epoch` (from 0), `minutes` after the last checkpoint: at the
    last epoch, every --save-every epochs, and once --save-minutes have passed. At the paper's
    size a checkpoint is a gigabyte and an epoch on a GPU a few seconds: by time, not by epoch."""
    return (epoch + 1 == args.epochs or minutes >= args.save_minutes
            or bool(args.save_every and (epoch + 1) % args.save_every == 0))


if __name__ == '__main__':
    sys.exit(main())
