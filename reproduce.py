"""The paper's tables and figures as grids of train.py runs, on this machine or a Slurm cluster.

    python reproduce.py run table2 --dry-run                 # the train.py commands, their count and cost
    python reproduce.py run permutation --scale cpu --jobs 2
    python reproduce.py run table1 --launcher slurm --partition gpu --time 1440 --max-parallel 32
    python reproduce.py report table2                        # Markdown tables and figures from the runs

Each run has its own directory runs/EXPERIMENT/NAME, NAME made from its flags (--runs-dir moves
runs/; the project's own records behind docs/results.md are in results/). A run with a
summary.json is skipped and an interrupted one continued (train.py --resume), so after any
failure or interruption the same command picks up where the grid stands. Models are selected
as in the paper (App. A.2): within a cell of a table, the run with the best validation accuracy,
reporting its test accuracy at that epoch; mean and standard deviation over seeds.
"""
import argparse
import functools
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
INTERRUPTED = 130  # train.py's exit status after a signal and a checkpoint: resume it
RUNS = os.path.join(ROOT, 'runs')

# ----------------------------------------------------------------------------- the grids
# App. A.2: SGD models tried momentum {0, 0.9} x weight decay {0, 1e-4, 2e-4, 5e-4, 1e-3};
# beta-LASSO models beta in {0, 1, 50} and lambda in {1e-6, ..., 2e-5}, chosen separately for the
# convolution-like layer and for the FC layers. Dropout (the paper tried it, rate unstated) is not
# in the grid. Validation: 5,000 training images held out (the paper does not give its split).
SCALES = {
    'paper': dict(
        datasets=['cifar10', 'cifar100', 'svhn'], s_alpha=150, d_alpha=15, epochs=(400, 4000), table2_epochs=4000,
        sgd=[dict(momentum=m, weight_decay=wd) for m in (0.0, 0.9) for wd in (0.0, 1e-4, 2e-4, 5e-4, 1e-3)],
        lam_conv=[1e-6, 2e-6, 5e-6, 1e-5, 2e-5], lam_fc=[1e-6, 2e-6, 5e-6, 1e-5, 2e-5],
        fig2_sizes=[2 ** k for k in range(15, 31)], val_size=5000,
        resnet_alpha=64, fig5_kernels=[3, 5, 7, 9, 11, 13, 15]),
    'cpu': dict(  # the same grids shrunk to fit 2 cores in hours, not GPU-months:
        datasets=['cifar10'],  # 3 datasets -> CIFAR-10
        s_alpha=4, d_alpha=2,  # alpha 150 / 15 -> 4 / 2 (S-FC: 256M -> 3.2M weights)
        epochs=(10, 30), table2_epochs=30,  # 400 / 4000 epochs -> 10 / 30
        sgd=[dict(momentum=0.9, weight_decay=5e-4)],  # 10 SGD settings -> the usual one
        lam_conv=[2e-5, 5e-5], lam_fc=[2e-6, 5e-6],  # 5 x 5 lambdas -> 2 x 2, at the top of the grid
        fig2_sizes=[2 ** k for k in range(15, 22)],  # 2^15 .. 2^30 parameters -> 2^15 .. 2^21
        val_size=5000,
        resnet_alpha=8, fig5_kernels=[3, 9]),  # ResNet18 at alpha 64 -> 8; kernel sizes 3..15 -> 3 and 9
}
ARCHS = ['d_conv', 'd_local', 'd_fc', 's_conv', 's_local', 's_fc', 'three_fc']  # Table 1's rows
FIG2_ARCHS = ['resnet18', 'd_conv', 's_conv', 'three_fc']  # Fig. 2


def table1(s):
    """Table 1: every architecture, dataset and length, SGD's grid."""
    return [dict(arch=arch, dataset=dataset, epochs=epochs, **sgd)
            for arch in ARCHS for dataset in s['datasets'] for epochs in s['epochs'] for sgd in s['sgd']]


def table2(s):
    """Table 2: S-CONV, S-LOCAL, 3-FC and S-FC with SGD's grid; S-FC with beta-LASSO's."""
    sgd = [dict(arch=arch, dataset=dataset, **opt) for arch in ('s_conv', 's_local', 'three_fc', 's_fc')
           for dataset in s['datasets'] for opt in s['sgd']]
    blasso = [dict(arch='s_fc', dataset=dataset, beta=beta, lam_conv=lc, lam_fc=lf)
              for dataset in s['datasets'] for beta in (0, 1, 50) for lc in s['lam_conv'] for lf in s['lam_fc']]
    return [dict(run, epochs=s['table2_epochs']) for run in sgd + blasso]


def fig2(s):
    """Fig. 2: test accuracy against the number of parameters; alpha (3-FC: width) per size."""
    runs = []
    for arch in FIG2_ARCHS:
        for size in s['fig2_sizes']:
            knob = 'width' if arch == 'three_fc' else 'alpha'
            runs += [dict(arch=arch, dataset=dataset, epochs=s['epochs'][0], **{knob: size_to_width(arch, size)})
                     for dataset in s['datasets']]
    return unique(runs)


def fig5(s):
    """Fig. 5: ResNet18 with k x k kernels, SGD's grid against beta-LASSO's (beta 50, lambda grid)."""
    sgd = [dict(**opt) for opt in s['sgd']]
    blasso = [dict(beta=50, lam_conv=lc, lam_fc=lf) for lc in s['lam_conv'] for lf in s['lam_fc']]
    return [dict(arch='resnet18', dataset=dataset, kernel_size=k, epochs=s['epochs'][0], **opt)
            for dataset in s['datasets'] for k in s['fig5_kernels'] for opt in sgd + blasso]


def permutation(s):
    """A fixed pixel permutation changes nothing for S-FC and takes S-CONV's prior away (§4)."""
    return [dict(arch=arch, dataset='cifar10', epochs=s['epochs'][0], permute_pixels=permute, **opt)
            for arch, opt in (('s_fc', dict(beta=50)), ('s_conv', {})) for permute in (False, True)]


# cpu-claim's epochs by training-set size (50000: all 45k images): more epochs on fewer images
CPU_CLAIM_EPOCHS = {5000: 400, 10000: 300, 50000: 100}
# the layer-1 lambda of cpu-claim's later seeds, per (images, alpha) with crop + flip: seed 0 ran the whole grid,
# each later seed SGD and one lambda, validation's choice on seed 0 (but seed 1 of 5k images at alpha 4: 1e-4,
# where it chose 2e-4); seeds 3 and 4 where three pairs left the difference's interval holding zero
CPU_CLAIM_LATER_SEEDS = {(5000, 4): (1e-4, 2e-4, 2e-4, 2e-4), (5000, 8): (2e-4, 2e-4),
                         (10000, 4): (1e-4, 1e-4, 1e-4, 1e-4), (10000, 8): (1e-4, 1e-4), (50000, 4): (2e-5, 2e-5)}


def cpu_claim(s):
    """Where does beta-LASSO beat SGD on S-FC at CPU scale? Training-set size x alpha x {SGD;
    beta-LASSO, lr 1.0, layer-1 lambda in {1e-5, 2e-5, 5e-5, 1e-4, 2e-4} (5k images: and 5e-4), FC
    layers a tenth}, crop + flip. The lambda grid reaches far enough that validation's choice is
    inside it on the small sets. More epochs on fewer images (3,600 / 5,700 / 8,700 steps), so that
    SGD's train accuracy saturates on the small sets. Then the paper's augmentation (--augment faa)
    at alpha 4 on 10k images and on the full set, with the lambdas around the one crop + flip chose.
    Seeds 1 and 2 of the crop + flip cells (3 and 4 of two): SGD and one lambda each (CPU_CLAIM_LATER_SEEDS)."""
    blasso = lambda lam: dict(beta=50, lr=1.0, lam_conv=lam, lam_fc=lam / 10)  # noqa: E731
    lams = {n: (1e-5, 2e-5, 5e-5, 1e-4, 2e-4) + ((5e-4,) if n == 5000 else ()) for n in CPU_CLAIM_EPOCHS}
    methods = {n: [{}] + [blasso(lam) for lam in lams[n]] for n in CPU_CLAIM_EPOCHS}
    faa_methods = {10000: [{}] + [blasso(lam) for lam in (2e-5, 5e-5, 1e-4, 2e-4)],
                   50000: [{}] + [blasso(lam) for lam in (1e-5, 2e-5, 5e-5)]}
    # on 5k images an epoch's training is a fifth of its evaluation and plotting: do those 40 times a run
    run = lambda n, alpha, augment, method, seed=0: dict(  # noqa: E731
        arch='s_fc', dataset='cifar10', alpha=alpha, train_size=n if n < 45000 else None, epochs=CPU_CLAIM_EPOCHS[n],
        augment=augment, eval_every=CPU_CLAIM_EPOCHS[n] // 40, save_every=CPU_CLAIM_EPOCHS[n] // 40, **method, seed=seed)
    later = [run(n, alpha, 'basic', method, seed) for (n, alpha), seed_lams in CPU_CLAIM_LATER_SEEDS.items()
             for seed, lam in enumerate(seed_lams, 1) for method in ({}, blasso(lam))]
    return ([run(n, alpha, 'basic', method) for n in (5000, 10000, 50000) for alpha in (4, 8) for method in methods[n]] +
            [run(n, 4, 'faa', method) for n in (10000, 50000) for method in faa_methods[n]] + later)


# table2-cpu: Table 2's rows where cpu-claim found beta-LASSO ahead (10k images, alpha 8, crop + flip); lambda is
# the one cpu-claim's validation chose there
TABLE2_CPU_LAM = 1e-4


def table2_cpu(s):
    """Table 2 at CPU scale: S-FC with SGD and with beta-LASSO beside 3-FC, S-LOCAL and S-CONV (SGD) on
    10k CIFAR-10 images at alpha 8. The S-FC runs are cpu-claim's own cell (same flags, same folder).
    Seed s fixes the subset, the split, the weights and the data order of every row, so rows pair by
    seed: 5 seeds for the S-FC pair whose difference is the claim, 3 for the others."""
    n, epochs = 10000, 300
    base = dict(dataset='cifar10', alpha=8, train_size=n, epochs=epochs, augment='basic',
                eval_every=epochs // 40, save_every=epochs // 40)
    blasso = dict(beta=50, lr=1.0, lam_conv=TABLE2_CPU_LAM, lam_fc=TABLE2_CPU_LAM / 10)
    rows = [(dict(arch='s_fc'), 5), (dict(arch='s_fc', **blasso), 5), (dict(arch='three_fc'), 3),
            (dict(arch='s_local'), 3), (dict(arch='s_conv'), 3)]
    return [dict(arch=row['arch'], **base, **{k: v for k, v in row.items() if k != 'arch'}, seed=seed)
            for row, seeds in rows for seed in range(seeds)]


# length-probe: cpu-claim's alpha 4 cell on all 45k images, where beta-LASSO trails SGD at 100 epochs, trained four
# times as long (the paper trains 4000 epochs); lambda is the one cpu-claim's validation chose there
LENGTH_PROBE_LAM = 2e-5


def length_probe(s):
    """Does beta-LASSO's deficit on all the data shrink with training length? S-FC at alpha 4 on all 45k
    CIFAR-10 images, crop + flip, SGD and beta-LASSO, 400 epochs (cpu-claim's 100-epoch cell, four times
    as long); one seed, a probe. Its runs sit in cpu-claim's folder, beside the 100-epoch ones."""
    epochs = 4 * CPU_CLAIM_EPOCHS[50000]
    base = dict(arch='s_fc', dataset='cifar10', alpha=4, train_size=None, epochs=epochs, augment='basic',
                eval_every=epochs // 40, save_every=epochs // 40)
    blasso = dict(beta=50, lr=1.0, lam_conv=LENGTH_PROBE_LAM, lam_fc=LENGTH_PROBE_LAM / 10)
    return [dict(base, **method, seed=0) for method in ({}, blasso)]


# locality: where a fully connected net's first layer turns local, on which data and by which method
LOCALITY_DATA = {'NLGP g 0.3': dict(dataset='nlgp', nlgp_gain=0.3), 'NLGP g 3': dict(dataset='nlgp', nlgp_gain=3.0),
                 'Gaussian twin of g 3': dict(dataset='nlgp-gaussian', nlgp_gain=3.0),
                 'CIFAR-10, 5k images': dict(dataset='cifar10', train_size=5000)}
LOCALITY_METHODS = {'SGD': {}, 'beta-LASSO': dict(beta=50, lr=1.0, lam_conv=4e-4, lam_fc=1e-5),
                    'IMP': dict(imp_rounds=4, imp_fraction=0.8, imp_first_layer=True)}


def locality(s):
    """Where locality comes from: S-FC (alpha 2, 30 epochs, no augmentation) trained by SGD, by
    beta-LASSO and by iterative magnitude pruning (prune.py: 4 rounds, 4/5 of the first layer's
    surviving weights pruned after each, SGD; 0.8% left) on Ingrosso & Goldt's NLGP at a low and a high gain,
    on the high gain's Gaussian twin (the same covariance), and on 5k CIFAR-10 images; 3 seeds,
    one whole seed after the other. Then 7 more seeds of the comparison 3 seeds leave open: beta-LASSO
    on NLGP g 3 against its Gaussian twin, whose per-seed localities spread over 0.15-0.6."""
    base = dict(arch='s_fc', alpha=2, epochs=30, augment='none', eval_every=5, save_every=5)
    return ([dict(base, **data, **method, seed=seed) for seed in range(3) for data in LOCALITY_DATA.values()
             for method in LOCALITY_METHODS.values()] +
            [dict(base, **LOCALITY_DATA[data], **LOCALITY_METHODS['beta-LASSO'], seed=seed) for seed in range(3, 10)
             for data in ('NLGP g 3', 'Gaussian twin of g 3')])


EXPERIMENTS = {'table1': table1, 'table2': table2, 'fig2': fig2, 'fig5': fig5, 'permutation': permutation,
               'cpu-claim': cpu_claim, 'table2-cpu': table2_cpu, 'length-probe': length_probe, 'locality': locality}
FOLDERS = {'table2-cpu': 'cpu-claim', 'length-probe': 'cpu-claim'}  # experiments that share their runs with another's folder


def size_to_width(arch, size):
    """The alpha (3-FC: hidden width) whose parameter count is nearest `size` on a log scale. Counts
    are quadratic in it, so three small models give the polynomial exactly."""
    import models
    def count(k):
        return models.build(arch, 1, width=k).num_params() if arch == 'three_fc' else models.build(arch, k).num_params()
    c1, c2, c3 = count(1), count(2), count(3)
    a = (c3 - 2 * c2 + c1) / 2
    b = c2 - c1 - 3 * a
    c = c1 - a - b
    root = (-b + math.sqrt(b * b - 4 * a * (c - size))) / (2 * a)
    candidates = [k for k in (math.floor(root), math.ceil(root)) if k >= 1] or [1]
    return min(candidates, key=lambda k: abs(math.log((a * k * k + b * k + c) / size)))


# --dry-run's GPU-hours assume this sustained training rate, in TFLOP/s: an assumption, a third of
# an H100/H200's float32 peak (67 TFLOP/s without tensor cores), until bench.py --device gpu measures one
GPU_TFLOPS = 20.0


@functools.lru_cache(maxsize=None)
def _quadratic(arch, num_classes, kernel_size, knob):
    """(macs per image, parameters) as exact quadratics in alpha (knob 'alpha') or in 3-FC's width
    (knob 'width'): every layer's size is a polynomial of degree 2 in either, so three small builds
    give it, and a paper-sized net is never built."""
    import models
    points = []
    for k in (1, 2, 3):
        model = (models.build(arch, 1, num_classes, width=k) if knob == 'width' else
                 models.build(arch, k, num_classes, kernel_size=kernel_size))
        points.append((models.macs_per_image(model), model.num_params()))
    return [np.polyfit([1, 2, 3], [p[i] for p in points], 2) for i in (0, 1)]


TRAIN_IMAGES = {'cifar10': 50000, 'cifar100': 50000, 'svhn': 73257, 'nlgp': 20000, 'nlgp-gaussian': 20000}
SVHN_EXTRA = 531131


def cost(runs):
    """(training FLOPs, checkpoint bytes) of a list of runs. FLOPs: 6 per multiply-add and
    training image (the forward, and the backward's two products), times the images and epochs;
    evaluation (a third of that per evaluated image) is left out. Bytes: the float32 weights, and
    SGD's velocity, in checkpoint.npz and checkpoint.prev.npz, which a run keeps when it ends."""
    import models
    flops = disk = 0
    for run in runs:
        dataset = run.get('dataset', 'cifar10')
        classes = {'cifar100': 100, 'nlgp': 2, 'nlgp-gaussian': 2}.get(dataset, 10)
        if run['arch'] == 'three_fc':
            knob, size = 'width', run.get('width') or models.three_fc_width(run['alpha'], classes)
        else:
            knob, size = 'alpha', run['alpha']
        macs, params = (np.polyval(c, size) for c in _quadratic(run['arch'], classes, run.get('kernel_size', 3), knob))
        images = run.get('train_size') or (TRAIN_IMAGES[dataset] + SVHN_EXTRA * bool(run.get('svhn_extra'))
                                           - run.get('val_size', 0))
        flops += 6 * macs * images * run['epochs'] * run.get('imp_rounds', 1)  # prune.py: a training per round
        momentum = run.get('beta') is None and run.get('momentum', 0.9) > 0
        disk += 2 * 4 * params * (1 + momentum)
    return flops, disk


def cost_text(flops_and_disk, tflops):
    flops, disk = flops_and_disk
    hours = flops / tflops / 1e12 / 3600
    return (f'# training compute {flops:.3g} FLOP: {hours:,.0f}' if hours >= 10 else f'# training compute {flops:.3g} FLOP: {hours:.2g}') + (
        f' GPU-hours at {tflops:g} TFLOP/s sustained (an assumption; --gpu-tflops); checkpoints kept at the end: {disk / 1e9:,.3g} GB'
        ' (each run writes its checkpoint every 10 minutes of training, train.py\'s --save-minutes, and at its end)')


def unique(runs):
    seen, out = set(), []
    for run in runs:
        key = json.dumps(run, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(run)
    return out


def grid(experiment, scale, dataset=None, epochs=None, alpha=None, seeds=1):
    """The runs of an experiment: train.py flags as dicts, with the scale's defaults filled in."""
    s = SCALES[scale]
    if dataset:
        s = dict(s, datasets=[dataset])
    runs = []
    for run in EXPERIMENTS[experiment](s):
        run = dict(run)
        if 'alpha' not in run and 'width' not in run:  # 3-FC's width, where given, sets its size alone
            run['alpha'] = (s['d_alpha'] if run['arch'].startswith('d_') else s['resnet_alpha']
                            if run['arch'] == 'resnet18' else s['s_alpha'])
        run.setdefault('val_size', s['val_size'])
        if dataset:
            run['dataset'] = dataset
        if epochs:
            run['epochs'] = epochs
        if alpha and 'width' not in run:
            run['alpha'] = alpha
        runs += [run] if 'seed' in run else [dict(run, seed=seed) for seed in range(seeds)]  # a grid may pair its own seeds
    return unique(runs)


# the order and short labels of the flags in a run's directory name
NAME_PARTS = [('arch', ''), ('dataset', ''), ('alpha', 'a'), ('width', 'w'), ('kernel_size', 'k'), ('epochs', 'e'),
              ('batch_size', 'bs'), ('train_size', 'n'), ('nlgp_gain', 'g'), ('augment', 'aug-'), ('permute_pixels', 'perm'),
              ('lr', 'lr'), ('momentum', 'm'), ('weight_decay', 'wd'), ('beta', 'b'), ('lam_conv', 'lc'), ('lam_fc', 'lf'),
              ('imp_rounds', 'imp'), ('imp_fraction', 'pf'), ('imp_first_layer', 'first'),
              ('val_size', 'v'), ('eval_every', 'ev'), ('save_every', 'se'), ('seed', 's')]


def run_name(run):
    unknown = set(run) - {key for key, _ in NAME_PARTS}
    assert not unknown, f'add {unknown} to NAME_PARTS'
    parts = []
    for key, label in NAME_PARTS:
        value = run.get(key)
        if value is None or value is False:
            continue
        parts.append(label if value is True else f'{label}{value:g}' if isinstance(value, float) else f'{label}{value}')
    return '-'.join(parts)


def flag_value(value):
    """A flag's value as train.py's command line spells it."""
    return f'{value:g}' if isinstance(value, float) else str(value)


def flags(run):
    """A run's dict as command-line flags."""
    out = []
    for key, value in run.items():
        flag = '--' + key.replace('_', '-')
        if value is True:
            out.append(flag)
        elif value is not None and value is not False:
            out += [flag, flag_value(value)]
    return out


def train_command(run, run_dir, data_dir=None):
    """The train.py command line of a run: fresh, or --resume when it has a checkpoint. A run with
    imp_* keys is prune.py's rounds of train.py runs, which continues itself."""
    data = ['--data-dir', data_dir] if data_dir else []
    if 'imp_rounds' in run:
        imp = {k[len('imp_'):]: v for k, v in run.items() if k.startswith('imp_')}
        return ([sys.executable, os.path.join(ROOT, 'prune.py'), '--rounds', str(imp['rounds']),
                 '--fraction', f'{imp["fraction"]:g}'] + ['--first-layer-only'] * bool(imp.get('first_layer')) +
                ['--out', run_dir, '--'] + flags({k: v for k, v in run.items() if not k.startswith('imp_')}) + ['--quiet'] + data)
    command = [sys.executable, os.path.join(ROOT, 'train.py')]
    if any(os.path.exists(os.path.join(run_dir, f)) for f in ('checkpoint.npz', 'checkpoint.prev.npz')):
        return command + ['--resume', run_dir, '--quiet']
    return command + flags(run) + ['--out', run_dir, '--quiet'] + data


def is_done(run_dir):
    return os.path.exists(os.path.join(run_dir, 'summary.json'))


# ----------------------------------------------------------------------------- launchers

def launch_local(todo, jobs, data_dir):
    """At most `jobs` train.py processes at once, each with its share of the CPU threads or its own
    GPU (round robin over the visible ones); a tqdm bar of runs done / running / left.
    Ctrl-C or SIGTERM stops the grid: no new run starts, and each running one is sent one SIGTERM
    (they run in their own sessions, so a terminal's Ctrl-C does not reach them twice), finishes
    its step, checkpoints and exits; the same command then continues."""
    from tqdm import tqdm
    import backend
    gpus = backend.cupy.cuda.runtime.getDeviceCount() if backend.gpu_available() else 0
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    from train import holder
    pending, running, failed, shown, stopping, held = list(todo), {}, [], None, [], []

    def stop(signum, frame):
        if not stopping:
            for process in running:
                process.send_signal(signal.SIGTERM)
        stopping.append(signum)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=len(todo), unit='run', desc='runs')
    try:
        while (pending and not stopping) or running:
            while pending and not stopping and len(running) < jobs:
                run_dir, run = pending.pop(0)
                pid = holder(run_dir)
                if pid:  # another process writes it (the same grid started twice)
                    held.append(f'{run_dir} (pid {pid})')
                    continue
                slot = min(set(range(jobs)) - {s for s, _, _ in running.values()})
                env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
                if gpus:
                    env['CUDA_VISIBLE_DEVICES'] = str(slot % gpus)
                os.makedirs(run_dir, exist_ok=True)
                log = open(os.path.join(run_dir, 'train.log'), 'a')
                process = subprocess.Popen(train_command(run, run_dir, data_dir), stdout=log, stderr=subprocess.STDOUT,
                                           env=env, cwd=ROOT, start_new_session=True)
                running[process] = (slot, run_dir, log)
            for process in [p for p in running if p.poll() is not None]:
                _, run_dir, log = running.pop(process)
                log.close()
                if process.returncode not in (0, INTERRUPTED):
                    failed.append(f'{run_dir} (exit {process.returncode}; see its train.log)')
                if process.returncode == 0:
                    bar.update(1)
            if (len(running), len(pending), len(failed)) != shown:  # redraw on change only: logs stay short
                shown = (len(running), len(pending), len(failed))
                bar.set_postfix(running=shown[0], left=shown[1], failed=shown[2])
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
    for line in held:
        print(f'skipped, another process is writing it: {line}')
    for line in failed:
        print(f'failed: {line}')
    if stopping:
        print('stopped: the running runs wrote their checkpoints; issue the same command to continue')
        return INTERRUPTED
    return 1 if failed or held else 0


class TrainJob:
    """One run as a Slurm (submitit) job: train.py in a child process. Before a time limit
    (--signal-delay s before it) or a preemption Slurm signals the job (USR2) and submitit calls
    checkpoint(): the child is told to stop (it finishes its step and writes its checkpoint), and
    the job is requeued; requeued, it continues the run from its directory. A plain class:
    submitit is imported only here."""

    def __call__(self, run_dir, run, data_dir=None):
        from train import holder
        if is_done(run_dir):
            return run_dir
        pid = holder(run_dir)
        if pid:  # a requeued job while the old one still writes: leave the run to it
            print(f'skipped {run_dir}: pid {pid} is writing it')
            return run_dir
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, 'train.log'), 'a') as log:
            self.process = subprocess.Popen(train_command(run, run_dir, data_dir), stdout=log,
                                            stderr=subprocess.STDOUT, cwd=ROOT)
            code = self.process.wait()
        if code != 0:
            raise RuntimeError(f'train.py exited with {code}: see {run_dir}/train.log')
        return run_dir

    def checkpoint(self, run_dir, run, data_dir=None):
        from submitit.helpers import DelayedSubmission
        process = getattr(self, 'process', None)
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGUSR2)  # train.py: finish the step, checkpoint, exit
            try:  # os.waitpid, not process.wait(): __call__ is inside wait(), holding its lock
                os.waitpid(process.pid, 0)
            except ChildProcessError:  # it had already been reaped
                pass
        return DelayedSubmission(TrainJob(), run_dir, run, data_dir)


def slurm_parameters(args, count):
    """The SlurmExecutor parameters of a grid: one job array of `count` runs."""
    return dict(job_name=f'blasso-{args.experiment}', partition=args.partition, time=args.time,
                gpus_per_node=args.gpus_per_run, cpus_per_task=args.cpus_per_run,
                array_parallelism=min(args.max_parallel, count), signal_delay_s=args.signal_delay)


def sbatch_script(args, count):
    """The sbatch file submitit writes for the grid's job array, as text (no Slurm needed)."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own, so the preview is what is sent
    return _make_sbatch_string(command=f'{sys.executable} -u -m submitit.core._submit {args.slurm_log_dir}',
                               folder=args.slurm_log_dir, map_count=count, **slurm_parameters(args, count))


def launch_slurm(todo, args, executor=None):
    """The grid as one Slurm job array; returns its jobs. executor: for tests (LocalExecutor)."""
    try:
        import submitit
    except ImportError:
        raise SystemExit('error: --launcher slurm needs submitit: pip install submitit') from None
    if executor is None:
        try:
            # submitit requeues a job after at most max_num_timeout time limits; its default, 3, would
            # give up a long run at its fourth
            executor = submitit.SlurmExecutor(folder=args.slurm_log_dir, max_num_timeout=args.max_requeues)
        except RuntimeError as e:  # no srun: not a Slurm machine
            fail(f'--launcher slurm needs a Slurm cluster ({e}); --dry-run prints the sbatch script')
        executor.update_parameters(**slurm_parameters(args, len(todo)))
    run_dirs, runs = zip(*todo)
    jobs = executor.map_array(TrainJob(), run_dirs, runs, [args.data_dir] * len(todo))
    print(f'submitted {len(jobs)} runs as job array {jobs[0].job_id.split("_")[0]}; logs in {args.slurm_log_dir}; '
          f'when they are done: python reproduce.py report {args.experiment}')
    return jobs


# ----------------------------------------------------------------------------- report

# the paper's figures, for beside ours: Table 1 (arch, dataset, epochs) and Table 2 (row, dataset)
PAPER_TABLE1 = {
    'd_conv': [88.84, 89.79, 63.73, 62.26, 95.65, 95.86], 'd_local': [86.13, 86.07, 58.58, 55.71, 95.71, 95.85],
    'd_fc': [64.78, 63.62, 36.61, 35.51, 92.52, 90.97], 's_conv': [84.14, 87.05, 59.48, 62.51, 92.34, 93.38],
    's_local': [81.52, 85.86, 56.64, 62.03, 92.51, 93.98], 's_fc': [72.77, 78.63, 47.72, 51.43, 88.64, 91.80],
    'three_fc': [69.19, 75.12, 44.95, 50.75, 85.98, 86.02]}  # C10 400/4000, C100 400/4000, SVHN 400/4000
PAPER_TABLE2 = {
    ('s_conv', 'SGD'): [87.05, 62.51, 93.38], ('s_local', 'SGD'): [85.86, 62.03, 93.98],
    ('three_fc', 'SGD'): [75.12, 50.75, 86.02], ('s_fc', 'SGD'): [78.63, 51.43, 91.80],
    ('s_fc', 'beta-LASSO beta=0'): [82.45, 55.58, 93.80], ('s_fc', 'beta-LASSO beta=1'): [82.52, 55.96, 93.66],
    ('s_fc', 'beta-LASSO beta=50'): [85.19, 59.56, 94.07]}  # C10, C100, SVHN
PAPER_FIG5 = {  # read off the paper's Fig. 5 (digitised): test accuracy at k = 3, 5, ..., 15
    ('cifar10', 'beta-LASSO'): [95.9, 95.0, 94.5, 93.6, 93.4, 92.8, 92.4],
    ('cifar10', 'SGD'): [95.7, 94.4, 93.1, 92.6, 91.3, 91.0, 90.9],
    ('cifar100', 'beta-LASSO'): [78.8, 75.8, 75.4, 74.1, 73.5, 73.1, 72.7],
    ('cifar100', 'SGD'): [78.0, 74.9, 73.4, 71.3, 69.0, 69.6, 67.4],
    ('svhn', 'beta-LASSO'): [97.08, 96.95, 96.90, 96.91, 96.75, 96.76, 96.73],
    ('svhn', 'SGD'): [97.01, 96.87, 96.88, 96.68, 96.59, 96.54, 96.65]}
DATASET_COLUMNS = ['cifar10', 'cifar100', 'svhn']


AUGMENTATION_NAMES = {'basic': 'crop + flip', 'faa': 'Fast AutoAugment'}


def method(config):
    return 'SGD' if config.get('beta') is None else f'beta-LASSO beta={config["beta"]:g}'


# the cell of each experiment: runs in one cell (and one seed) compete in model selection
CELLS = {
    'table1': lambda c: (c['arch'], c['dataset'], c['epochs']),
    'table2': lambda c: (c['arch'], method(c), c['dataset']),
    'fig2': lambda c: (c['arch'], c['dataset'], c.get('width') or c['alpha']),
    'fig5': lambda c: (c['dataset'], 'SGD' if c.get('beta') is None else 'beta-LASSO', c.get('kernel_size', 3)),
    'permutation': lambda c: (c['arch'], method(c), c['dataset'], bool(c.get('permute_pixels'))),
    # cpu-claim's folder also holds table2-cpu's other rows and length-probe's longer runs
    'cpu-claim': lambda c: None if c['arch'] != 's_fc' or c['epochs'] != CPU_CLAIM_EPOCHS.get(c.get('train_size') or 50000) else (
        c.get('train_size') or 50000 - c.get('val_size', 0), c['alpha'], c.get('augment', 'faa'),
        'SGD' if c.get('beta') is None else 'beta-LASSO'),
    'length-probe': lambda c: (c['epochs'], 'SGD' if c.get('beta') is None else 'beta-LASSO') if (
        c['arch'], c.get('train_size'), c['alpha'], c.get('augment')) == ('s_fc', None, 4, 'basic') else None,
    'locality': lambda c: (next(label for label, data in LOCALITY_DATA.items() if all(c.get(k) == v for k, v in data.items())),
                           'IMP' if c.get('imp_rounds') else 'SGD' if c.get('beta') is None else 'beta-LASSO'),
    'table2-cpu': lambda c: (c['arch'], method(c)) if (c.get('train_size'), c['alpha'], c.get('augment'), c['epochs'])
    == (10000, 8, 'basic', 300) else None,
}


def read_runs(experiment, folder):
    """Every finished run of an experiment in folder: (config, summary, run_dir). In a folder
    that two experiments share, each keeps the runs its CELLS has a cell for."""
    runs = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        run_dir = os.path.join(folder, name)
        if is_done(run_dir):
            config = json.load(open(os.path.join(run_dir, 'config.json')))
            if CELLS[experiment](config) is not None:
                runs.append((config, json.load(open(os.path.join(run_dir, 'summary.json'))), run_dir))
    return runs


def select(experiment, runs):
    """Model selection as the paper: per cell and seed, the run with the best validation accuracy
    (its test accuracy at that epoch). Returns {cell: [selected (config, summary, run_dir) per seed]}."""
    by_seed = {}
    for config, summary, run_dir in runs:
        by_seed.setdefault((CELLS[experiment](config), config['seed']), []).append((config, summary, run_dir))
    cells = {}
    for (cell, _), candidates in sorted(by_seed.items(), key=lambda item: str(item[0])):
        best = max(candidates, key=lambda r: r[1]['best_val_acc'] if r[1].get('best_val_acc') is not None
                   else r[1]['final_test_acc'])  # no validation split: the last epoch, said in the table
        cells.setdefault(cell, []).append(best)
    return cells


def accuracy(summary):
    selected = summary.get('selected_test_acc')
    return 100 * (selected if selected is not None else summary['final_test_acc'])


def paired_difference(a, b, key=None, scale=100):
    """a - b in accuracy points (or, given a summary key, in that figure times scale) over the
    seeds both cells have where it is defined: (mean, 95% t-interval half-width or None for one
    pair, pairs), or None without a common seed."""
    from scipy import stats
    value = (lambda s: accuracy(s)) if key is None else (lambda s: None if s.get(key) is None else scale * s[key])  # noqa: E731
    by_seed = lambda selected: {config['seed']: value(summary) for config, summary, _ in selected  # noqa: E731
                                if value(summary) is not None}
    a, b = by_seed(a), by_seed(b)
    diffs = [a[seed] - b[seed] for seed in sorted(set(a) & set(b))]
    if not diffs:
        return None
    half = stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else None
    return float(np.mean(diffs)), half, len(diffs)


def paired_excess(a, b):
    """paired_difference of locality minus shuffled locality: the arrangement, net of sparsity."""
    excess = lambda selected: [(c, dict(s, excess=None if s.get('shuffled_locality') is None or s.get('locality_score') is None  # noqa: E731
                                        else s['locality_score'] - s['shuffled_locality']), d) for c, s, d in selected]
    return paired_difference(excess(a), excess(b), 'excess', 1)


def difference_text(diff, digits=2):
    if diff is None:
        return '—'
    mean, half, pairs = diff
    if half is None:
        return f'{mean:+.{digits}f} (1 pair: no interval)'
    verdict = '' if abs(mean) > half and round(abs(mean), digits) > 0 else ', not established'  # 0.00 is no difference
    return f'{mean:+.{digits}f} ± {half:.{digits}f} ({pairs} pairs{verdict})'


def train_text(selected):
    return f'{100 * np.mean([s["train_acc"] for _, s, _ in selected]):.1f}' if selected else '—'


def first_layer_text(selected, *references):
    """Mean layer-1 non-zeros over seeds, with the reference layer sizes at this alpha."""
    if not selected:
        return '—'
    nonzero = np.mean([next(iter(s['layers'].values()))['nonzero'] for _, s, _ in selected])
    sizes = [selected[0][1].get('reference_sizes', {}).get(r) for r in references]
    return f'{nonzero:,.0f} (' + '; '.join(f'{size:,}' for size in sizes if size) + ')'


def locality_text(selected):
    """Mean locality over the seeds where it is defined (a unit with 20 or more weights left)."""
    scores = [s.get('locality_score') for _, s, _ in selected]
    defined = [v for v in scores if v is not None]
    if not defined:
        return 'n/a'
    return f'{np.mean(defined):.2f}' + (f' ({len(defined)} of {len(scores)} seeds)' if len(defined) < len(scores) else '')


def cell_text(selected, runs):
    """'mean ± std (n runs, s seeds)' of a cell's selected runs."""
    if not selected:
        return '—'
    accs = [accuracy(summary) for _, summary, _ in selected]
    spread = f' ± {np.std(accs, ddof=1):.2f}' if len(accs) > 1 else ''
    return f'{np.mean(accs):.2f}{spread} ({runs} run{"s" * (runs > 1)}, {len(accs)} seed{"s" * (len(accs) > 1)})'


def report_file(experiment, folder):
    """report.md in an experiment's own folder; report-EXPERIMENT.md in one it shares."""
    return 'report.md' if os.path.basename(os.path.normpath(folder)) == experiment else f'report-{experiment}.md'


def report(experiment, folder, out_dir=None):
    """Markdown tables laid out as the paper's, ours beside the paper's, from the finished runs in
    folder; the table and figures (PNG) are written to out_dir (default: folder)."""
    out_dir = out_dir or folder
    runs = read_runs(experiment, folder)
    if not runs:
        raise SystemExit(f'error: no finished runs under {folder}; start them with: python reproduce.py run {experiment}')
    os.makedirs(out_dir, exist_ok=True)  # the figures are drawn before the table is written
    cells = select(experiment, runs)
    counts = {}  # runs per cell, all seeds
    for config, _, _ in runs:
        cell = CELLS[experiment](config)
        counts[cell] = counts.get(cell, 0) + 1
    shown = os.path.relpath(folder, ROOT) if os.path.abspath(folder).startswith(ROOT + os.sep) else folder
    lines = [f'{experiment}: {len(runs)} finished runs in {shown}.', '',
             'Test accuracy (%) of the run with the best validation accuracy in each cell and seed, at its best '
             'validation epoch (the last epoch where a run had no validation split); mean ± std over '
             'seeds' + ('; the paper\'s figure in brackets.' if experiment in ('table1', 'table2', 'fig5') else '.'), '']
    if experiment == 'table1':
        epochs = sorted({cell[2] for cell in cells})
        columns = [(d, e) for d in DATASET_COLUMNS for e in epochs]
        lines += ['| model | ' + ' | '.join(f'{d} {e} ep.' for d, e in columns) + ' |',
                  '|---' * (len(columns) + 1) + '|']
        for arch in ARCHS:
            row = []
            for d, e in columns:
                long = len(epochs) > 1 and e == max(epochs)  # the 4000-epoch column (30 at --scale cpu)
                paper = PAPER_TABLE1[arch][DATASET_COLUMNS.index(d) * 2 + long]
                row.append(f'{cell_text(cells.get((arch, d, e)), counts.get((arch, d, e), 0))} [{paper}]')
            lines.append(f'| {arch} | ' + ' | '.join(row) + ' |')
    elif experiment == 'table2':
        lines += ['| model | method | ' + ' | '.join(DATASET_COLUMNS) + ' |', '|---|---|---|---|---|']
        for (arch, row_method), paper in PAPER_TABLE2.items():
            row = [f'{cell_text(cells.get((arch, row_method, d)), counts.get((arch, row_method, d), 0))} [{p}]'
                   for d, p in zip(DATASET_COLUMNS, paper)]
            lines.append(f'| {arch} | {row_method} | ' + ' | '.join(row) + ' |')
        fig3(cells, out_dir)
        lines += ['', 'Fig. 3: fig3.png (non-zeros per layer of the selected beta-LASSO beta=50 S-FC run).']
    elif experiment == 'fig2':
        lines += ['| model | dataset | alpha (3-FC: width) | parameters | test acc. |', '|---|---|---|---|---|']
        points = {}
        for (arch, dataset, knob), selected in sorted(cells.items()):
            params = selected[0][1]['weights_total']
            points.setdefault((arch, dataset), []).append((params, np.mean([accuracy(s) for _, s, _ in selected])))
            lines.append(f'| {arch} | {dataset} | {knob} | {params:,} | {cell_text(selected, counts[(arch, dataset, knob)])} |')
        fig2_png(points, out_dir)
        lines += ['', 'Fig. 2: fig2.png (test accuracy against the number of weights).']
    elif experiment == 'fig5':
        kernels = sorted({cell[2] for cell in cells})
        lines += ['| dataset | method | ' + ' | '.join(f'k = {k}' for k in kernels) + ' |', '|---' * (len(kernels) + 2) + '|']
        for dataset in DATASET_COLUMNS:
            for name in ('SGD', 'beta-LASSO'):
                if any((dataset, name, k) in cells for k in kernels):
                    paper = dict(zip(range(3, 16, 2), PAPER_FIG5[(dataset, name)]))
                    lines.append(f'| {dataset} | {name} | ' + ' | '.join(
                        f'{cell_text(cells.get((dataset, name, k)), counts.get((dataset, name, k), 0))} [{paper[k]}]'
                        for k in kernels) + ' |')
        fig5_png(cells, out_dir)
        lines += ['', 'Fig. 5: fig5.png (test accuracy against kernel size; the paper\'s points dashed).']
    elif experiment == 'permutation':
        lines += ['| model | method | dataset | test acc. | with --permute-pixels | layer-1 non-zeros (permuted) |',
                  '|---|---|---|---|---|---|']
        for arch, name, dataset in sorted({cell[:3] for cell in cells}):
            plain, permuted = cells.get((arch, name, dataset, False)), cells.get((arch, name, dataset, True))
            first = next(iter(permuted[0][1]['layers'].values())) if permuted else None
            nonzero = f'{first["nonzero"]:,} of {first["size"]:,}' if first else '—'
            lines.append(f'| {arch} | {name} | {dataset} | {cell_text(plain, counts.get((arch, name, dataset, False), 0))} '
                         f'| {cell_text(permuted, counts.get((arch, name, dataset, True), 0))} | {nonzero} |')
    elif experiment == 'cpu-claim':
        lines += ['| train images | alpha | augmentation | SGD | beta-LASSO (lambda by validation) | paired difference '
                  '(95% CI) | train acc. SGD / beta-LASSO | layer-1 non-zeros (S-LOCAL\'s layer) | locality | '
                  'layer-1 lambda chosen |', '|---' * 10 + '|']
        gaps = {}
        planned = {CELLS[experiment](run)[:3] for run in grid(experiment, 'paper')}  # cells with no run yet show a dash
        for n, alpha, augment in sorted({cell[:3] for cell in cells} | planned, key=lambda row: (row[2] != 'basic', row)):
            sgd, lasso = cells.get((n, alpha, augment, 'SGD'), []), cells.get((n, alpha, augment, 'beta-LASSO'), [])
            diff = paired_difference(lasso, sgd)
            if diff:
                gaps.setdefault((alpha, augment), []).append((n,) + diff[:2])
            lams = ', '.join(f'{config["lam_conv"]:g}' for config, _, _ in lasso)  # per seed
            lines.append(f'| {n:,} | {alpha} | {AUGMENTATION_NAMES.get(augment, augment)} '
                         f'| {cell_text(sgd, counts.get((n, alpha, augment, "SGD"), 0))} '
                         f'| {cell_text(lasso, counts.get((n, alpha, augment, "beta-LASSO"), 0))} '
                         f'| {difference_text(diff)} | {train_text(sgd)} / {train_text(lasso)} '
                         f'| {first_layer_text(lasso, "S-LOCAL layer 1")} | {locality_text(lasso)} | {lams or "—"} |')
        gap_png(gaps, out_dir)
        lines += ['', 'Paired difference: beta-LASSO minus SGD over the seeds both have (each seed fixes the subset, '
                  'split and data order), its mean and a 95% t-interval; "not established" where the interval holds 0. '
                  'gap.png draws it against the number of training images, one line per alpha and augmentation.']
    elif experiment == 'table2-cpu':
        lines += ['| model | method | test acc. | train acc. | layer-1 non-zeros (S-CONV\'s; S-LOCAL\'s layer) '
                  '| locality | paper (CIFAR-10, Table 2) |', '|---|---|---|---|---|---|---|']
        rows = [('three_fc', 'SGD'), ('s_fc', 'SGD'), ('s_fc', 'beta-LASSO beta=50'), ('s_local', 'SGD'), ('s_conv', 'SGD')]
        for arch, name in rows:
            selected = cells.get((arch, name), [])
            paper = PAPER_TABLE2[(arch, name)][0]
            lines.append(f'| {arch} | {name} | {cell_text(selected, counts.get((arch, name), 0))} | {train_text(selected)} '
                         f'| {first_layer_text(selected, "S-CONV layer 1", "S-LOCAL layer 1")} '
                         f'| {locality_text(selected) if arch in ("s_fc", "three_fc") else "by construction"} | {paper} |')
        sgd, lasso = cells.get(('s_fc', 'SGD'), []), cells.get(('s_fc', 'beta-LASSO beta=50'), [])
        diff = paired_difference(lasso, sgd)
        lines += ['', f'S-FC, beta-LASSO minus SGD, paired by seed: {difference_text(diff)} (the paper: '
                  f'{PAPER_TABLE2[("s_fc", "beta-LASSO beta=50")][0] - PAPER_TABLE2[("s_fc", "SGD")][0]:+.2f}).']
        for target in ('s_local', 's_conv'):
            other = cells.get((target, 'SGD'), [])
            if sgd and lasso and other:
                mean = lambda selected: np.mean([accuracy(s) for _, s, _ in selected])  # noqa: E731
                gap = mean(other) - mean(sgd)
                paper = PAPER_TABLE2[(target, 'SGD')][0] - PAPER_TABLE2[('s_fc', 'SGD')][0]
                paper_closed = (PAPER_TABLE2[('s_fc', 'beta-LASSO beta=50')][0] - PAPER_TABLE2[('s_fc', 'SGD')][0]) / paper
                lines.append(f'Of the gap from S-FC (SGD) to {target.upper().replace("_", "-")} ({gap:+.2f} points; '
                             f'the paper {paper:+.2f}), beta-LASSO closes {100 * (mean(lasso) - mean(sgd)) / gap:.0f}% '
                             f'(the paper: {100 * paper_closed:.0f}%), from the means over seeds.')
    elif experiment == 'length-probe':
        lines += ['| epochs | SGD | beta-LASSO | paired difference (95% CI) | train acc. SGD / beta-LASSO '
                  '| layer-1 non-zeros (S-LOCAL\'s layer) | locality |', '|---' * 7 + '|']
        for epochs in sorted({cell[0] for cell in cells}):
            sgd, lasso = cells.get((epochs, 'SGD'), []), cells.get((epochs, 'beta-LASSO'), [])
            lines.append(f'| {epochs} | {cell_text(sgd, counts.get((epochs, "SGD"), 0))} '
                         f'| {cell_text(lasso, counts.get((epochs, "beta-LASSO"), 0))} '
                         f'| {difference_text(paired_difference(lasso, sgd))} | {train_text(sgd)} / {train_text(lasso)} '
                         f'| {first_layer_text(lasso, "S-LOCAL layer 1")} | {locality_text(lasso)} |')
        lines += ['', f'S-FC, alpha 4, all 45k training images, crop + flip. The 100-epoch row is cpu-claim\'s cell (beta-LASSO\'s '
                  f'lambda by validation per seed); the {4 * CPU_CLAIM_EPOCHS[50000]}-epoch row is one seed at lambda '
                  f'{LENGTH_PROBE_LAM:g}, a probe.']
    elif experiment == 'locality':
        lines += ['| data | method | test acc. | train acc. | layer-1 weights kept | locality | the same weights shuffled '
                  '| inverse participation ratio | training minutes (fastest seed) |', '|---' * 9 + '|']
        for data in LOCALITY_DATA:
            for name in LOCALITY_METHODS:
                selected = cells.get((data, name), [])
                values = lambda key: [s[key] for _, s, _ in selected if s.get(key) is not None]  # noqa: E731
                first = [next(iter(layers.values())) for layers in values('layers')]  # layer 1
                share = first and np.mean([layer['nonzero'] / layer['size'] for layer in first])
                ipr, seconds, shuffled = values('inverse_participation_ratio'), values('seconds'), values('shuffled_locality')
                of = lambda found: '' if len(found) == len(selected) else f' ({len(found)} of {len(selected)} seeds)'  # noqa: E731
                lines.append(f'| {data} | {name} | {cell_text(selected, counts.get((data, name), 0))} | {train_text(selected)} '
                             f'| {f"{100 * share:.2f}%" if selected else "—"} | {locality_text(selected) if selected else "—"} '
                             f'| {f"{np.mean(shuffled):.2f}{of(shuffled)}" if shuffled else "—"} '
                             f'| {f"{np.mean(ipr):.3f}{of(ipr)}" if ipr else "—"} '
                             f'| {f"{np.min(seconds) / 60:.1f}" if seconds else "—"} |')
        lines += ['', 'NLGP g 3 minus its Gaussian twin (the same covariance), paired by seed, mean and 95% t-interval:']
        for name in LOCALITY_METHODS:
            nlgp, twin = cells.get(('NLGP g 3', name), []), cells.get(('Gaussian twin of g 3', name), [])
            lines.append(f'- {name}: locality {difference_text(paired_difference(nlgp, twin, "locality_score", 1))} '
                         f'(its excess over the shuffled weights\' {difference_text(paired_excess(nlgp, twin))}), '
                         f'inverse participation ratio {difference_text(paired_difference(nlgp, twin, "inverse_participation_ratio", 1), 3)}, '
                         f'test accuracy {difference_text(paired_difference(nlgp, twin))}')
        locality_png(cells, out_dir)
        lines += ['', 'Locality: the share of a first-layer unit\'s weight mass inside its best 9x9 window (dense random '
                  '~0.1, S-LOCAL 1.0); inverse participation ratio: sum w^4 / (sum w^2)^2 of a unit\'s weights (dense random '
                  '~0.001, one weight 1); both over units with 20 or more weights, mean over seeds. Shuffled: the locality of '
                  'the same units with each unit\'s weights moved to random positions, what sparsity alone scores '
                  '(report.shuffled_locality). Training minutes: the fastest seed\'s (a run\'s clock counts the time it waits for a core); IMP\'s are its '
                  '4 trainings\'. locality.png: seed 0\'s first layer, 4 units per data set and method (of those with 20 '
                  'or more weights, the fewest, the most and two between; red positive, blue negative).']
    else:
        lines += ['| cell | selected run | test acc. | layer-1 non-zeros | locality |', '|---|---|---|---|---|']
        for cell, selected in cells.items():
            _, summary, run_dir = selected[0]
            first = next(iter(summary['layers'].values()))
            locality = summary.get('locality_score')
            lines.append(f'| {" / ".join(map(str, cell))} | {os.path.basename(run_dir)} | {cell_text(selected, counts[cell])} '
                         f'| {first["nonzero"]:,} of {first["size"]:,} | {"n/a" if locality is None else f"{locality:.2f}"} |')
    text = '\n'.join(lines) + '\n'
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, report_file(experiment, folder)), 'w') as f:
        f.write(text)
    return text


def report_block(experiment):
    return f'<!-- reproduce.py report {experiment} -->', '<!-- end of report -->'


def write_into(path, experiment, text):
    """Replace the text between FILE's two marker lines of this experiment by the report."""
    start, end = report_block(experiment)
    try:
        lines = open(path).read().split('\n')
    except OSError as e:
        fail(f'--into: cannot read {path} ({e.strerror})')
    if start not in lines or end not in lines[lines.index(start):]:
        fail(f'--into: {path} has no "{start}" line followed by "{end}"')
    first = lines.index(start)
    last = lines.index(end, first)
    with open(path, 'w') as f:
        f.write('\n'.join(lines[:first + 1] + text.rstrip('\n').split('\n') + lines[last:]))


def axes():
    """A fresh figure for a report PNG (matplotlib without a display)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(6, 4))


def save_png(fig, ax, path, **labels):
    import matplotlib.pyplot as plt
    ax.set(**labels)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fig2_png(points, out_dir):
    fig, ax = axes()
    for (arch, dataset), xy in sorted(points.items()):
        xy = sorted(xy)
        ax.plot([p for p, _ in xy], [a for _, a in xy], marker='o', label=f'{arch} ({dataset})')
    save_png(fig, ax, os.path.join(out_dir, 'fig2.png'), xscale='log', xlabel='number of weights',
             ylabel='test accuracy (%)', title='Fig. 2')


def gap_png(gaps, out_dir):
    """gaps: {(alpha, augment): [(images, mean difference, 95% half-width or None)]}."""
    fig, ax = axes()
    for (alpha, augment), points in sorted(gaps.items()):
        sizes, means, halves = zip(*sorted(points))
        ax.errorbar(sizes, means, yerr=[h or 0 for h in halves], marker='o', capsize=3,
                    linestyle='-' if augment == 'basic' else '--',
                    label=f'alpha {alpha}, ' + AUGMENTATION_NAMES.get(augment, augment))
    ax.axhline(0, color='grey', linewidth=0.8)
    sizes = sorted({n for points in gaps.values() for n, _, _ in points})
    ax.set_xscale('log')
    ax.set_xticks(sizes, [f'{n:,}' for n in sizes])  # the grid's sizes, not powers of ten
    ax.minorticks_off()
    save_png(fig, ax, os.path.join(out_dir, 'gap.png'), xlabel='training images',
             ylabel='beta-LASSO - SGD test accuracy (points)', title='S-FC, CIFAR-10')


def fig5_png(cells, out_dir):
    fig, ax = axes()
    for (dataset, name), paper in PAPER_FIG5.items():
        ours = sorted((k, np.mean([accuracy(s) for _, s, _ in selected]))
                      for (d, n, k), selected in cells.items() if (d, n) == (dataset, name))
        if ours:
            line, = ax.plot(*zip(*ours), marker='o', label=f'{dataset} {name} (ours)')
            ax.plot(range(3, 16, 2), paper, linestyle='--', color=line.get_color(), label=f'{dataset} {name} (paper)')
    save_png(fig, ax, os.path.join(out_dir, 'fig5.png'), xlabel='kernel size k', ylabel='test accuracy (%)',
             title='Fig. 5: ResNet18')


def locality_png(cells, out_dir):
    """locality.png: for each data set (rows) and method (columns), 4 first-layer units of the
    seed-0 run, each its weights summed over the 3 channels: among the units with 20 or more
    weights (those the locality score counts), the fewest, the most and two between.
    Drawn from the runs' checkpoints; where none is kept (results/ holds no weights) an existing
    picture is left as it is."""
    panels = {}
    for i, data in enumerate(LOCALITY_DATA):
        for j, name in enumerate(LOCALITY_METHODS):
            run = next((r for r in cells.get((data, name), []) if r[0]['seed'] == 0), None)
            paths = [] if run is None else [os.path.join(run[2], 'checkpoint.npz')] + sorted(
                glob.glob(os.path.join(run[2], 'round-*', 'checkpoint.npz')), reverse=True)  # IMP: its last round
            path = next((p for p in paths if os.path.exists(p)), None)
            if path:
                with np.load(path) as checkpoint:
                    W = checkpoint['param/1.W']  # (3 * 32 * 32, units), inputs as (C, H, W)
                maps = W.T.reshape(-1, 3, 32, 32).sum(axis=1)
                counts = np.count_nonzero(W, axis=0)
                units = np.flatnonzero(counts >= 20) if np.sum(counts >= 20) >= 4 else np.arange(len(counts))
                units = units[np.argsort(counts[units], kind='stable')]  # fewest weights first
                panels[i, j] = maps[units[np.linspace(0, len(units) - 1, 4).round().astype(int)]]
    if not panels:
        return
    import matplotlib.pyplot as plt
    fig, grid_axes = plt.subplots(len(LOCALITY_DATA), 4 * len(LOCALITY_METHODS), squeeze=False,
                                  figsize=(12, 0.9 * len(LOCALITY_DATA) + 0.6))
    for ax in grid_axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for i, data in enumerate(LOCALITY_DATA):
        grid_axes[i, 0].set_ylabel(data, rotation=0, ha='right', va='center', fontsize=8)
    for j, name in enumerate(LOCALITY_METHODS):
        grid_axes[0, 4 * j].set_title(name, loc='left', fontsize=9)
    for (i, j), maps in panels.items():
        for k, unit in enumerate(maps):
            limit = np.abs(unit).max() or 1
            grid_axes[i, 4 * j + k].imshow(unit, cmap='RdBu_r', vmin=-limit, vmax=limit)
    fig.tight_layout(pad=0.3)
    fig.savefig(os.path.join(out_dir, 'locality.png'), dpi=100)
    plt.close(fig)


def fig3(cells, out_dir):
    """The selected beta=50 S-FC run's non-zeros per layer over epochs (report.save_curves)."""
    import report as run_report
    for (arch, row_method, dataset), selected in cells.items():
        if arch == 's_fc' and row_method == 'beta-LASSO beta=50':
            config, _, run_dir = selected[0]
            metrics = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
            run_report.save_curves(metrics, run_report.reference_sizes(config['alpha']),
                                   os.path.join(out_dir, f'fig3-{dataset}.png' if dataset != 'cifar10' else 'fig3.png'))


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    p = argparse.ArgumentParser(description="Run the paper's grids of train.py runs, and report them as its tables.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.error = lambda message: fail(message)
    p.add_argument('action', choices=['run', 'report'], help='run the grid, or report the finished runs')
    p.add_argument('experiment', choices=list(EXPERIMENTS), help='which table or figure')
    p.add_argument('--scale', default='paper', choices=list(SCALES), help="paper's grid, or shrunk to fit a CPU")
    p.add_argument('--dataset', default=None, help='only this dataset')
    p.add_argument('--epochs', type=int, default=None, help='override every run\'s epochs')
    p.add_argument('--alpha', type=int, default=None, help='override every run\'s alpha')
    p.add_argument('--seeds', type=int, default=1, help='seeds 0..N-1 of every configuration')
    p.add_argument('--only', action='append', default=[], metavar='FLAG=VALUE',
                   help='run: only the grid\'s runs whose train.py FLAG has VALUE, e.g. --only seed=2 (repeatable)')
    p.add_argument('--data-dir', default=None, help='passed to train.py')
    p.add_argument('--runs-dir', default=None, help='where the grids\' run directories live (default: runs/)')
    p.add_argument('--into', default=None, metavar='FILE',
                   help='report: also write the table into FILE, between its "<!-- reproduce.py report EXPERIMENT -->" '
                        'and "<!-- end of report -->" lines')
    p.add_argument('--gpu-tflops', type=float, default=GPU_TFLOPS,
                   help='--dry-run: the sustained training rate the GPU-hours assume (an assumption: measure yours '
                        'with bench.py --device gpu)')
    p.add_argument('--dry-run', action='store_true', help='print the commands (and the sbatch script) and their count')
    p.add_argument('--launcher', default='local', choices=['local', 'slurm'], help='this machine, or a Slurm job array')
    p.add_argument('--jobs', type=int, default=1, help='local: runs at once')
    p.add_argument('--partition', default=None, help='slurm: partition')
    p.add_argument('--gpus-per-run', type=int, default=1, help='slurm: GPUs per run')
    p.add_argument('--cpus-per-run', type=int, default=8, help='slurm: CPU cores per run')
    p.add_argument('--time', type=int, default=1440, help='slurm: minutes per job before it is requeued')
    p.add_argument('--signal-delay', type=int, default=120,
                   help='slurm: seconds before the time limit that a job is signalled to checkpoint and be requeued '
                        '(Slurm sends it up to 30 s earlier still)')
    p.add_argument('--max-requeues', type=int, default=100,
                   help='slurm: how many time limits a run may reach, each followed by a requeue, before it is '
                        'given up (submitit\'s max_num_timeout; preemptions do not count)')
    p.add_argument('--max-parallel', type=int, default=64, help='slurm: array tasks at once')
    p.add_argument('--slurm-log-dir', default=None, help='slurm: submitit logs (default: RUNS_DIR/slurm)')
    args = p.parse_args(argv)
    runs_dir = args.runs_dir or RUNS
    args.slurm_log_dir = args.slurm_log_dir or os.path.join(runs_dir, 'slurm')
    folder = os.path.join(runs_dir, FOLDERS.get(args.experiment, args.experiment))
    if not args.gpu_tflops > 0:
        fail(f'--gpu-tflops must be positive, got {args.gpu_tflops}')
    for name in ('epochs', 'alpha', 'seeds', 'jobs', 'gpus_per_run', 'cpus_per_run', 'time', 'max_parallel',
                 'signal_delay', 'max_requeues'):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ('gpus_per_run', 'max_requeues') else 1):
            fail(f'--{name.replace("_", "-")} must be positive, got {value}')
    if args.launcher == 'slurm' and args.signal_delay >= 60 * args.time:
        fail(f'--signal-delay {args.signal_delay} s must be shorter than --time {args.time} min')
    if args.dataset and args.dataset not in DATASET_COLUMNS:
        fail(f"unknown dataset {args.dataset!r}; choose one of {', '.join(DATASET_COLUMNS)}")
    only = [item.partition('=')[::2] for item in args.only]
    for (key, value), item in zip(only, args.only):
        if key.lstrip('-').replace('-', '_') not in dict(NAME_PARTS) or not value:
            fail(f"--only {item}: expected FLAG=VALUE with FLAG one of {', '.join(k.replace('_', '-') for k, _ in NAME_PARTS)}")
    only = [(key.lstrip('-').replace('-', '_'), value) for key, value in only]

    if args.action == 'report':
        text = report(args.experiment, folder)
        print(text, end='')
        print(f'written to {os.path.join(folder, report_file(args.experiment, folder))}')
        if args.into:
            write_into(args.into, args.experiment, text)
            print(f'and into {args.into}')
        return 0
    runs = grid(args.experiment, args.scale, args.dataset, args.epochs, args.alpha, args.seeds)
    runs = [run for run in runs if all(flag_value(run.get(key)) == value for key, value in only)]
    todo = [(os.path.join(folder, run_name(run)), run) for run in runs]
    done = [run_dir for run_dir, _ in todo if is_done(run_dir)]
    todo = [(run_dir, run) for run_dir, run in todo if not is_done(run_dir)]
    if args.dry_run:
        for run_dir, run in todo:  # shown as typed in the project's folder
            command = train_command(run, os.path.relpath(run_dir, ROOT), args.data_dir)
            command = ['python', os.path.basename(command[1])] + command[2:]  # train.py, or prune.py
            print(' '.join(command))
        print(f'# {len(runs)} runs in {args.experiment} at --scale {args.scale}: {len(done)} done, {len(todo)} to run')
        print(cost_text(cost([run for _, run in todo]), args.gpu_tflops))
        if args.launcher == 'slurm' and todo:
            print(f'# slurm: each run is signalled {args.signal_delay} s before its {args.time}-minute limit, checkpoints and '
                  f'is requeued, at most {args.max_requeues} times (--signal-delay, --max-requeues)')
            print(sbatch_script(args, len(todo)))
        return 0
    print(f'{args.experiment} at --scale {args.scale}: {len(runs)} runs, {len(done)} already done')
    if not todo:
        print(f'nothing to run; the report: python reproduce.py report {args.experiment}')
        return 0
    if args.launcher == 'slurm':
        launch_slurm(todo, args)
        return 0
    return launch_local(todo, args.jobs, args.data_dir)


def fail(message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
    sys.exit(main())
