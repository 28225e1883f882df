"""Iterative magnitude pruning (IMP; Frankle & Carbin, ICLR 2019) beside beta-LASSO: rounds of
ordinary train.py runs, each holding a mask of pruned weights at zero.

    python prune.py --rounds 4 --fraction 0.5 --out runs/imp -- --dataset nlgp --arch s_fc --alpha 2 --epochs 30

Round 0 trains the dense net. After round r, the `fraction` of the weights still alive with the
smallest magnitudes at its end is pruned, in every weight layer (each layer by its own ranking)
or, with --first-layer-only, in the first; round r + 1 trains the survivors from their initial
values (the same seed builds the same net: Frankle & Carbin's rewind to initialisation) with
the mask held. Each round is a run directory OUT/round-R; its mask, OUT/mask-R.npz, is computed
from the round before and lives in the round's checkpoint too. The same command continues an
interrupted procedure: finished rounds are kept, a stopped one is resumed. At the end OUT holds
the last round's config.json and summary.json (training seconds summed over the rounds, the
procedure's settings added), so that OUT reads as one run to reproduce.py.
"""
import argparse
import json
import os

import numpy as np

import train


def prune(weights, alive, fraction):
    """A new 0/1 mask: alive minus the round(fraction * alive) alive weights of smallest |w|
    (ties broken by position, so that exactly that many go)."""
    order = np.argsort(np.where(alive, np.abs(weights), np.inf), axis=None, kind='stable')
    mask = alive.astype(np.float32).ravel()  # a copy
    mask[order[:int(round(fraction * alive.sum()))]] = 0
    return mask.reshape(weights.shape)


def next_mask(run_dir, fraction, first_layer_only):
    """The mask for the round after run_dir's, from its final weights and its own mask."""
    with np.load(os.path.join(run_dir, 'checkpoint.npz')) as checkpoint:
        weights = {k[len('param/'):]: checkpoint[k] for k in checkpoint.files
                   if k.startswith('param/') and checkpoint[k].ndim >= 2}  # weight matrices, not BN or biases
        masks = {name: checkpoint[f'mask/{name}'] if f'mask/{name}' in checkpoint.files else np.ones_like(w)
                 for name, w in weights.items()}
    first = min(weights, key=lambda name: int(name.split('.')[0]))  # '1.W' before '4.W'
    return {name: prune(w, masks[name] != 0, fraction) if name == first or not first_layer_only else masks[name]
            for name, w in weights.items()}


def main(argv=None):
    p = argparse.ArgumentParser(
        usage='python prune.py [--rounds R] [--fraction F] [--first-layer-only] --out DIR -- TRAIN.PY FLAGS',
        description='Iterative magnitude pruning: rounds of train.py runs with a held mask. The train.py flags of '
                    'every round follow "--", e.g. -- --dataset nlgp --arch s_fc --alpha 2 --epochs 30.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--rounds', type=int, default=4, help='rounds in all, the dense one included')
    p.add_argument('--fraction', type=float, default=0.5, help='share of the surviving weights pruned after each round')
    p.add_argument('--first-layer-only', action='store_true', help='prune the first weight layer only')
    p.add_argument('--out', required=True, help='directory of the rounds')
    args, train_flags = p.parse_known_args(argv)
    train_flags = [f for f in train_flags if f != '--']
    if not 0 < args.fraction < 1 or args.rounds < 1:
        raise SystemExit('error: --fraction must be in (0, 1) and --rounds at least 1')
    if any(f in train_flags for f in ('--out', '--mask', '--resume')):
        raise SystemExit('error: prune.py sets --out, --mask and --resume of each round itself')
    os.makedirs(args.out, exist_ok=True)
    with train.one_writer(args.out):
        code = run_rounds(args, train_flags)
    return code


def run_rounds(args, train_flags):
    for r in range(args.rounds):
        run_dir = os.path.join(args.out, f'round-{r}')
        if os.path.exists(os.path.join(run_dir, 'summary.json')):
            continue  # finished
        if os.path.exists(os.path.join(run_dir, 'checkpoint.npz')):
            code = train.main(['--resume', run_dir])
        else:
            mask_flags = []
            if r > 0:
                mask_path = os.path.join(args.out, f'mask-{r}.npz')
                masks = next_mask(os.path.join(args.out, f'round-{r - 1}'), args.fraction, args.first_layer_only)
                np.savez(mask_path + '.tmp.npz', **masks)
                os.replace(mask_path + '.tmp.npz', mask_path)
                mask_flags = ['--mask', mask_path]
            code = train.main(train_flags + ['--out', run_dir] + mask_flags)
        if code != 0:
            print(f'round {r} stopped (exit {code}); the same command continues it')
            return code
        summary = json.load(open(os.path.join(run_dir, 'summary.json')))
        densities = ', '.join(f'{name} {layer["share"]:.3f}' for name, layer in summary['layers'].items())
        print(f'round {r}: test accuracy {summary["final_test_acc"]:.2%}, weights kept: {densities}')
    rounds = [os.path.join(args.out, f'round-{r}') for r in range(args.rounds)]
    imp = dict(imp_rounds=args.rounds, imp_fraction=args.fraction, imp_first_layer=args.first_layer_only)
    config = dict(json.load(open(os.path.join(rounds[-1], 'config.json'))), out=args.out, mask=None, **imp)
    summary = dict(json.load(open(os.path.join(rounds[-1], 'summary.json'))), seconds=sum(json.load(open(os.path.join(d, 'summary.json')))['seconds'] for d in rounds), **imp)
    for name, content in (('config.json', config), ('summary.json', summary)):
        with open(os.path.join(args.out, name + '.tmp'), 'w') as f:
            json.dump(content, f, indent=2)
        os.replace(os.path.join(args.out, name + '.tmp'), os.path.join(args.out, name))  # summary.json last: done
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
