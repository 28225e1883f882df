"""What a run reports beyond accuracy: the first layer's filters (paper Fig. 4), how local they
are (one number), the non-zero curves (Fig. 3) and Theorem 2's description length."""
import json
import math
import os

import numpy as np

import models
from backend import get_array_module, to_numpy


def first_layer(model):
    return next(l for l in model.layers if isinstance(l, (models.Linear, models.Conv2d, models.Local2d)))


def kernel_rings(model):
    """For each conv layer with k > 1: the share of its weights still non-zero at each distance
    from the kernel's centre (max(|dy|, |dx|) = 0, 1, ..., k // 2). Under beta-LASSO, a large
    kernel that keeps its centre and loses its rim has learned to be a smaller one (Fig. 5)."""
    convs = []  # (parameter name, layer), named as model.params() names them
    for i, layer in enumerate(model.layers):
        convs += [(f'{i}.W', layer)] if isinstance(layer, models.Conv2d) else []
        for path in ('branch', 'shortcut'):  # inside a residual block
            inner = getattr(layer, path, None)
            convs += [(f'{i}.{path}.{j}.W', l) for j, l in enumerate(inner.layers if inner else [])
                      if isinstance(l, models.Conv2d)]
    rings = {}
    for name, layer in convs:
        k = layer.k
        if k > 1:
            kept = to_numpy(layer.W).reshape(k, k, -1) != 0  # rows in (k, k, C) order
            radius = np.maximum(*np.abs(np.mgrid[:k, :k] - k // 2))  # (k, k)
            rings[name] = [float(kept[radius == r].mean()) for r in range(k // 2 + 1)]
    return rings


def first_layer_maps(model, image_size, in_channels):
    """Each first-layer unit's incoming weights as a map on the input grid: (U, C, H, W).
    FC: a column of W reshaped; LOCAL: each position's filter drawn where it looks on the
    image; CONV: its k x k kernels (the same at every position). The first weight layer only."""
    layer = first_layer(model)
    c, s = in_channels, image_size
    W = to_numpy(layer.W)
    if isinstance(layer, models.Linear):  # W: (C*H*W, U), inputs flattened as (C, H, W)
        return W.T.reshape(-1, c, s, s)
    k = layer.k
    if isinstance(layer, models.Conv2d):  # W: (k*k*C, F)
        return W.T.reshape(-1, k, k, c).transpose(0, 3, 1, 2)
    h_out = models.conv_out_size(s, k, layer.stride, layer.pad)
    p, _, f = W.shape  # W: (P, k*k*C, F)
    canvas = np.zeros((p, f, c, s + 2 * layer.pad, s + 2 * layer.pad), W.dtype)
    for pos in range(p):
        y, x = (pos // h_out) * layer.stride, (pos % h_out) * layer.stride  # in padded coordinates
        canvas[pos, :, :, y:y + k, x:x + k] = W[pos].T.reshape(f, k, k, c).transpose(0, 3, 1, 2)
    return canvas[:, :, :, layer.pad:layer.pad + s, layer.pad:layer.pad + s].reshape(p * f, c, s, s)


def locality_score(maps, window=9, min_nonzero=20):
    """Mean, over units with at least min_nonzero weights, of the share of a unit's weight mass
    (|w| summed over channels) inside its best window x window square. A dense random layer
    on 32x32 scores about 81/1024 ~ 0.1; a locally connected 9x9 layer scores 1.0.
    None when no unit qualifies or the maps are no larger than the window (a conv kernel)."""
    if maps.shape[-1] <= window:
        return None
    keep = np.count_nonzero(maps.reshape(len(maps), -1), axis=1) >= min_nonzero
    mass = np.abs(maps[keep]).sum(axis=1, dtype=np.float64)  # (U, H, W)
    if len(mass) == 0:
        return None
    integral = np.pad(mass.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))  # summed-area table
    windows = (integral[:, window:, window:] - integral[:, :-window, window:]
               - integral[:, window:, :-window] + integral[:, :-window, :-window])
    return float(np.mean(windows.reshape(len(mass), -1).max(1) / mass.sum(axis=(1, 2))))


def shuffled_locality(maps, seed=0):
    """The locality score of the same units with each unit's weights moved to random positions:
    what sparsity alone scores, without any arrangement (about 0.29 for units of 25 weights on
    32x32x3, 0.20 for 70; a dense layer 0.1)."""
    rng = np.random.default_rng(seed)
    flat = maps.reshape(len(maps), -1)
    shuffled = np.stack([row[rng.permutation(row.size)] for row in flat])
    return locality_score(shuffled.reshape(maps.shape))


def inverse_participation_ratio(maps, min_nonzero=20):
    """Mean, over units with at least min_nonzero weights, of sum(w^4) / sum(w^2)^2 over a unit's
    incoming weights (Ingrosso & Goldt's measure of a localised receptive field): 1/m for m equal
    weights, about 3/N for N Gaussian ones (0.001 for a dense unit on 32x32x3). None when no
    unit qualifies."""
    w = maps.reshape(len(maps), -1).astype(np.float64)
    w = w[np.count_nonzero(w, axis=1) >= min_nonzero]
    if len(w) == 0:
        return None
    return float(np.mean((w ** 4).sum(1) / (w ** 2).sum(1) ** 2))


def description_length(nonzero, n, b=32):
    """Theorem 2 with no weight sharing: k = ||w||_0 = nonzero parameters of n in all, b bits
    each. Bits: k*b + ||w||_0*log2(k*n) + 2*log2(n)."""
    k = max(nonzero, 1)
    return k * b + nonzero * math.log2(k * n) + 2 * math.log2(n)


def mdl_gap_bound(bits, n, m, delta=0.05):
    """Theorem 2's bound on test minus train error: sqrt((bits + log(2n/delta)) / (2m))."""
    return math.sqrt((bits + math.log(2 * n / delta)) / (2 * m))


def _tile(unit_map, size):
    """One unit's (C, H, W) weights as a size x size RGB image: zero is grey, colour is the weight
    over the unit's largest |w|."""
    from PIL import Image
    w = unit_map[:3] if len(unit_map) >= 3 else np.repeat(unit_map[:1], 3, axis=0)
    w = w / max(np.abs(w).max(), 1e-12)
    pixels = np.clip(128 + 127 * w, 0, 255).astype(np.uint8).transpose(1, 2, 0)  # (H, W, 3)
    return Image.fromarray(pixels).resize((size, size), Image.NEAREST)


def save_filters(maps, path, count=30, min_nonzero=20, seed=0, columns=10, scale=3):
    """Fig. 4 / Figs. 7-9: `count` units chosen at random among those with at least min_nonzero
    non-zero weights, each an RGB image (zero is grey; colour = weight / the unit's max |w|)."""
    from PIL import Image
    nonzero = np.count_nonzero(maps.reshape(len(maps), -1), axis=1)
    candidates = np.flatnonzero(nonzero >= min_nonzero)
    if len(candidates) == 0:
        candidates = np.flatnonzero(nonzero > 0)
    chosen = np.random.default_rng(seed).choice(candidates, min(count, len(candidates)), replace=False) \
        if len(candidates) else []
    tile = 32 * scale
    rows = max(1, -(-len(chosen) // columns))
    sheet = Image.new('RGB', (columns * (tile + 2), rows * (tile + 2)), 'white')
    for i, unit in enumerate(chosen):
        sheet.paste(_tile(maps[unit], tile), ((i % columns) * (tile + 2), (i // columns) * (tile + 2)))
    sheet.save(path)


# Fig. 4 over time: the first layer's filters at the start and at about 1%, 3%, 10%, 30% and 100%
# of a run, when locality, if it comes, shows early
SNAPSHOT_FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)


def snapshot_epochs(epochs):
    return sorted({0} | {max(1, round(epochs * f)) for f in SNAPSHOT_FRACTIONS})


def add_filter_snapshot(model, run_dir, epoch, seed=0, units=64):
    """Add the maps of `units` seeded first-layer units, the same units every time, to the run's
    filter_history.npz (key 'epochN'), and redraw filters-over-time.png from it."""
    maps = first_layer_maps(model, 32, 3)
    chosen = np.sort(np.random.default_rng(seed).choice(len(maps), min(units, len(maps)), replace=False))
    path = os.path.join(run_dir, 'filter_history.npz')
    history = dict(np.load(path)) if os.path.exists(path) else {}
    history[f'epoch{epoch}'] = maps[chosen].astype(np.float32)
    with open(path + '.tmp', 'wb') as f:
        np.savez(f, **history)
    os.replace(path + '.tmp', path)
    save_filter_history(history, os.path.join(run_dir, 'filters-over-time.png'))


def save_filter_history(history, path, rows=8, scale=2):
    """A grid: one row per unit (the `rows` units with the most non-zero weights at the last
    snapshot), one column per snapshot, its epoch written above it."""
    from PIL import Image, ImageDraw
    epochs = sorted(int(key[len('epoch'):]) for key in history)
    last = history[f'epoch{epochs[-1]}']
    units = np.argsort(-np.count_nonzero(last.reshape(len(last), -1), axis=1), kind='stable')[:rows]
    tile, header = 32 * scale, 14
    sheet = Image.new('RGB', (len(epochs) * (tile + 2), header + len(units) * (tile + 2)), 'white')
    draw = ImageDraw.Draw(sheet)
    for column, epoch in enumerate(epochs):
        draw.text((column * (tile + 2) + 2, 1), f'epoch {epoch}', fill='black')
        for row, unit in enumerate(units):
            sheet.paste(_tile(history[f'epoch{epoch}'][unit], tile), (column * (tile + 2), header + row * (tile + 2)))
    sheet.save(path)


def save_curves(metrics, references, path):
    """Test accuracy and the non-zero weights of each layer over epochs (Fig. 3), with the
    reference sizes (S-CONV's and S-LOCAL's first layer, each layer's full size) dashed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [m['epoch'] for m in metrics]
    fig, (acc, nnz) = plt.subplots(1, 2, figsize=(11, 4))
    scored = [m for m in metrics if m['test_acc'] is not None]  # --eval-every skips epochs
    acc.plot([m['epoch'] for m in scored], [100 * m['test_acc'] for m in scored], label='test')
    acc.plot(epochs, [100 * m['train_acc'] for m in metrics], label='train (augmented)')
    acc.set(xlabel='epoch', ylabel='accuracy (%)', title='accuracy')
    acc.legend()
    for name in metrics[0]['nonzero']:
        if name != 'total':
            nnz.plot(epochs, [max(m['nonzero'][name], 1) for m in metrics], label=f'layer {name}')
    for label, value in references.items():
        nnz.axhline(value, linestyle='--', linewidth=0.8, color='grey')
        nnz.annotate(label, (epochs[0], value), fontsize=7, color='grey', va='bottom')
    nnz.set(xlabel='epoch', ylabel='non-zero weights', title='non-zero weights per layer', yscale='log')
    nnz.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reference_sizes(alpha):
    """Fig. 3's dashed lines: S-CONV's and S-LOCAL's first layer at this alpha."""
    s_conv_layer1 = 3 * 81 * alpha
    positions = models.conv_out_size(32, 9, 2, 4) ** 2
    return {'S-CONV layer 1': s_conv_layer1, 'S-LOCAL layer 1': s_conv_layer1 * positions}


def summarize(args, model, metrics, num_train):
    """The end of a run: summary.json (accuracy, model selection, non-zeros per layer against
    their sizes, locality, Theorem 2), filters.png, and the same in a few printed lines."""
    final = metrics[-1]
    selected = max((m for m in metrics if m['val_acc'] is not None), key=lambda m: m['val_acc'], default=None)
    sizes = {name: int(p.size) for name, p, _ in model.params() if p.ndim >= 2}
    layers = {name: dict(nonzero=final['nonzero'][name], size=size, share=final['nonzero'][name] / size)
              for name, size in sizes.items()}
    for name, rings in kernel_rings(model).items():  # conv kernels: where in the k x k the weights stay
        layers[name]['ring_share'] = rings
    maps = first_layer_maps(model, 32, 3)
    # a convolution's first layer is local by construction: the score measures a learned locality
    conv_first = isinstance(first_layer(model), models.Conv2d)
    n = model.num_params()
    nonzero_all = sum(int(get_array_module(p).count_nonzero(p)) for _, p, _ in model.params())
    bits = description_length(nonzero_all, n)
    summary = dict(
        arch=args.arch, alpha=args.alpha, optimizer='sgd' if args.beta is None else 'blasso', beta=args.beta,
        dataset=args.dataset, epochs=final['epoch'],
        final_test_acc=final['test_acc'], train_acc=final['train_acc'],
        # model selection as the paper: the epoch of best validation accuracy, and its test accuracy
        best_val_acc=selected['val_acc'] if selected else None, selected_epoch=selected['epoch'] if selected else None,
        selected_test_acc=selected['test_acc'] if selected else None,
        best_test_acc_chosen_on_test=max(m['test_acc'] for m in metrics if m['test_acc'] is not None),  # optimistic
        layers=layers, nonzero_total=final['nonzero']['total'], weights_total=sum(sizes.values()),
        reference_sizes=reference_sizes(args.alpha),
        locality_score=None if conv_first else locality_score(maps),
        shuffled_locality=None if conv_first else shuffled_locality(maps, args.seed),
        inverse_participation_ratio=None if conv_first else inverse_participation_ratio(maps),
        description_length_bits=bits, mdl_gap_bound=mdl_gap_bound(bits, n, num_train),
        seconds=sum(m['seconds'] for m in metrics))
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    save_filters(maps, os.path.join(args.out, 'filters.png'), seed=args.seed)
    print(f'\n{args.arch} alpha {args.alpha}, {summary["optimizer"]}, {summary["epochs"]} epochs: '
          f'test accuracy final {100 * summary["final_test_acc"]:.2f}%' +
          (f', at the epoch of best validation accuracy ({selected["epoch"]}) {100 * selected["test_acc"]:.2f}%'
           if selected else f', best over epochs (chosen on the test set) {100 * summary["best_test_acc_chosen_on_test"]:.2f}%'))
    for name, layer in layers.items():
        rings = layer.get('ring_share')
        print(f'  layer {name:18s} non-zero {layer["nonzero"]:>12,} of {layer["size"]:>12,} ({100 * layer["share"]:.2f}%)'
              + (' by distance from the kernel centre: ' + ' '.join(f'{100 * r:.0f}%' for r in rings) if rings else ''))
    print('  reference: ' + ', '.join(f'{k} {v:,}' for k, v in summary['reference_sizes'].items()))
    locality = summary['locality_score']
    print('  locality score of the first layer: ' + ('n/a: a convolution, local by construction' if conv_first else
          f'{"n/a" if locality is None else f"{locality:.3f}"} (dense random ~0.1, S-LOCAL 1.0)'))
    print(f'  description length (Theorem 2): {bits:,.0f} bits; bound on the generalisation gap '
          f'{summary["mdl_gap_bound"]:.3g}')
    print(f'  written to {args.out}: config.json metrics.jsonl checkpoint.npz curves.png filters.png '
          f'filters-over-time.png summary.json')
