"""Fast AutoAugment (Lim et al. 2019), the paper's augmentation (App. A.2), as batched array ops.

Every op takes uint8 images (N, H, W, C) and one value per image, and returns new uint8 images
equal, pixel for pixel, to what the reference implementation (kakaobrain/fast-autoaugment,
which calls Pillow on one image at a time) gives. No loop over images: geometric ops are one
gather with per-image index maps, histogram ops one bincount over (image, channel), the rest
element-wise. One code path for NumPy and CuPy; random draws come from a host numpy Generator.

The released policies and op ranges are in faa_policies.json (copied from the reference).
"""
import json
import os

import numpy as np

from backend import bincount, get_array_module, to_numpy

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'faa_policies.json')) as _f:
    _SPEC = json.load(_f)
RANGES = {name: tuple(r) for name, r in _SPEC['op_ranges'].items()}  # the value range of each op
OPS = tuple(RANGES)  # the 15 ops the two policies use
SIGNED = frozenset(_SPEC['random_sign_ops'])  # the reference negates their value with probability 1/2
POLICIES = {name: _SPEC[name] for name in ('fa_reduced_cifar10', 'fa_reduced_svhn')}
CUTOUT_FILL = (125, 123, 114)  # the reference's in-policy Cutout colour
UNVALUED = ('AutoContrast', 'Invert', 'Equalize')  # the ops that take no value


def _grey(x):
    """uint8 (N, H, W, 3) -> int32 (N, H, W): Pillow's RGB -> L (ITU-R 601-2 luma, rounded)."""
    x = x.astype(np.int32)
    return (19595 * x[..., 0] + 38470 * x[..., 1] + 7471 * x[..., 2] + 32768) >> 16


def _blend(degenerate, x, factor):
    """Pillow's Image.blend(degenerate, x, factor), in float32 as Pillow does: truncated, clipped.
    factor: float (N,)."""
    xp = get_array_module(x)
    f = xp.asarray(factor, dtype=np.float32)[:, None, None, None]
    d = degenerate.astype(np.float32)
    return xp.clip(d + f * (x.astype(np.float32) - d), 0, 255).astype(np.uint8)


def _gather(x, sy, sx):
    """out[n, y, x] = x[n, sy, sx] where the source is inside the image, else black.
    sy, sx: integer index maps broadcastable to (N, H, W)."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    sy, sx = xp.broadcast_arrays(sy, sx)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    flat = (xp.arange(n)[:, None, None] * h + sy.clip(0, h - 1)) * w + sx.clip(0, w - 1)  # (N, H, W)
    return xp.take(x.reshape(n * h * w, c), flat, axis=0) * inside[..., None]  # take: 4x faster than [flat]


def _affine(x, a, b, c, d, e, f):
    """Pillow's AFFINE transform, NEAREST: output pixel (x, y) reads input (a x + b y + c,
    d x + e y + f), evaluated at pixel centres in Pillow's 16.16 fixed point (floating point
    differs from it at a few boundary pixels). a..f: float64 (N,) on the host."""
    xp = get_array_module(x)
    def fix(t):  # (N,) -> (N, 1, 1) int64 on x's device
        return xp.asarray(np.floor(t * 65536 + 0.5).astype(np.int64))[:, None, None]
    n, h, w, _ = x.shape
    ys, xs = xp.arange(h)[:, None], xp.arange(w)[None, :]
    sx = (fix(c + a * 0.5 + b * 0.5) + xs * fix(a) + ys * fix(b)) >> 16  # arithmetic shift: floor
    sy = (fix(f + d * 0.5 + e * 0.5) + xs * fix(d) + ys * fix(e)) >> 16
    return _gather(x, sy, sx)


def _shift(x, dx, dy):
    """out(x, y) = in(x + dx, y + dy), black outside; dx, dy: int (N,)."""
    xp = get_array_module(x)
    n, h, w, _ = x.shape
    dx, dy = xp.asarray(dx)[:, None, None], xp.asarray(dy)[:, None, None]
    return _gather(x, xp.arange(h)[:, None] + dy, xp.arange(w)[None, :] + dx)


def _rotate(x, degrees):
    """Pillow's Image.rotate(degrees): counter-clockwise about the centre, no expand, black fill."""
    n, h, w, _ = x.shape
    angle = -np.radians(degrees % 360.0)  # Pillow reduces mod 360 first
    cos, sin = np.round(np.cos(angle), 15), np.round(np.sin(angle), 15)
    cx, cy = w / 2, h / 2
    return _affine(x, cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


def _histograms(x):
    """uint8 (N, H, W, C) -> bins int32 (N, H, W, C), the index of each pixel's (image, channel,
    value), and hist (N, C, 256): one bincount for every image and channel at once."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    bins = x + (xp.arange(n * c, dtype=np.int32) * 256).reshape(n, 1, 1, c)
    return bins, bincount(bins.reshape(-1), n * c * 256).reshape(n, c, 256)


def _autocontrast(x):
    """Per image and channel, ImageOps.autocontrast (cutoff 0): lo..hi = the values present,
    lut[i] = int(i * scale + offset) with scale = 255 / (hi - lo), offset = -lo * scale, in
    float64 as Pillow does, clipped; unchanged where hi <= lo."""
    xp = get_array_module(x)
    bins, hist = _histograms(x)
    used = hist > 0
    lo = xp.argmax(used, axis=2)[:, :, None].astype(np.float64)  # (N, C, 1)
    hi = 255 - xp.argmax(used[:, :, ::-1], axis=2)[:, :, None].astype(np.float64)
    scale = 255.0 / xp.where(hi > lo, hi - lo, 1.0)
    lut = (xp.arange(256) * scale + -lo * scale).astype(np.int64).clip(0, 255)  # int() truncates
    lut = xp.where(hi > lo, lut, xp.arange(256)).astype(np.uint8)  # (N, C, 256)
    return xp.take(lut.reshape(-1), bins)


def _equalize(x):
    """Per image and channel, Pillow's ImageOps.equalize: a 256-bin histogram, then
    lut[i] = (step // 2 + count below i) // step with step = (pixels - count of the top
    non-empty bin) // 255, clipped at 255; unchanged where at most one bin is used or step is 0."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    bins, hist = _histograms(x)
    used = hist > 0
    top = 255 - xp.argmax(used[:, :, ::-1], axis=2)  # highest non-empty bin
    step = (h * w - xp.take_along_axis(hist, top[:, :, None], axis=2)[:, :, 0]) // 255  # (N, C)
    below = xp.cumsum(hist, axis=2) - hist  # pixels with a smaller value
    safe = xp.maximum(step, 1)[:, :, None]
    lut = xp.minimum((safe // 2 + below) // safe, 255)
    keep = (used.sum(axis=2) <= 1) | (step == 0)
    lut = xp.where(keep[:, :, None], xp.arange(256), lut).astype(np.uint8)  # (N, C, 256)
    return xp.take(lut.reshape(-1), bins)


def _smooth(x):
    """Pillow's ImageFilter.SMOOTH, kernel [1 1 1; 1 5 1; 1 1 1] / 13 in float32, summed in
    Pillow's order (row below, row, row above), rounded; the 1-pixel border is copied."""
    k1, k5 = np.float32(1) / np.float32(13), np.float32(5) / np.float32(13)
    v = x.astype(np.float32)
    def row(r, centre):  # r: (N, H-2, W, C) -> (N, H-2, W-2, C)
        return (r[:, :, :-2] * k1 + r[:, :, 1:-1] * centre) + r[:, :, 2:] * k1
    s = row(v[:, 2:], k1)
    s = s + row(v[:, 1:-1], k5)
    s = s + row(v[:, :-2], k1)
    out = x.copy()
    out[:, 1:-1, 1:-1] = (s.clip(0, 255) + np.float32(0.5)).astype(np.uint8)
    return out


def _cutout_centres(n, h, w, rng):
    """The reference's in-policy Cutout centres: uniform in (1, W] x (1, H] (numpy's uniform(W)
    is uniform(low=W, high=1)), x drawn first. Host float64 (N,) each."""
    cx = w + (1.0 - w) * rng.random(n)
    cy = h + (1.0 - h) * rng.random(n)
    return cx, cy


def _cutout_abs(x, size, cx, cy):
    """The reference's in-policy Cutout: a filled square of side about `size` px per image around
    (cx, cy); Pillow fills columns x0..int(x1) and rows y0..int(y1) inclusive."""
    xp = get_array_module(x)
    n, h, w, _ = x.shape
    x0, y0 = np.maximum(0, cx - size / 2).astype(int), np.maximum(0, cy - size / 2).astype(int)
    x1, y1 = np.minimum(w, x0 + size).astype(int), np.minimum(h, y0 + size).astype(int)
    rows = (xp.arange(h) >= xp.asarray(y0)[:, None]) & (xp.arange(h) <= xp.asarray(y1)[:, None])  # (N, H)
    cols = (xp.arange(w) >= xp.asarray(x0)[:, None]) & (xp.arange(w) <= xp.asarray(x1)[:, None])  # (N, W)
    hole = (rows[:, :, None] & cols[:, None, :] & xp.asarray(size > 0)[:, None, None])[..., None]
    return xp.where(hole, xp.asarray(CUTOUT_FILL, dtype=np.uint8), x)


def faa_op(name, x, value=None, rng=None):
    """Apply op `name` to uint8 images x (N, H, W, C), image i at value[i] (float (N,), in the
    op's own units: shear coefficient, fraction of the side for Translate and Cutout, degrees,
    threshold, bits before truncation, enhance factor; AutoContrast, Invert and Equalize take
    none). Returns new uint8 images (N, H, W, C). rng (numpy Generator): Cutout's centres."""
    if name not in RANGES:
        raise ValueError(f"unknown Fast AutoAugment op {name!r}; the ops are {', '.join(OPS)}")
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f'{name}: expected uint8 images (N, H, W, C), got {x.dtype} {x.shape}')
    n, h, w, _ = x.shape
    if name in UNVALUED:
        return _op(name, x)
    v = to_numpy(value).astype(np.float64).reshape(-1)  # values live on the host, like every draw
    lo, hi = RANGES[name]
    if len(v) != n or not np.all((v >= lo - 1e-9) & (v <= hi + 1e-9)):
        raise ValueError(f'{name}: expected {n} values in [{lo}, {hi}], got {len(v)} in '
                         f'[{v.min() if len(v) else None}, {v.max() if len(v) else None}]')
    if name == 'Cutout' and rng is None:
        raise ValueError('Cutout draws its centres: pass rng, a numpy Generator')
    return _op(name, x, v, _cutout_centres(n, h, w, rng) if name == 'Cutout' else None)


def _op(name, x, v=None, centres=None):
    """faa_op without its checks: v float64 (N,) on the host, in range; centres: Cutout's."""
    if name in UNVALUED:
        return {'AutoContrast': _autocontrast, 'Invert': lambda x: 255 - x, 'Equalize': _equalize}[name](x)
    xp = get_array_module(x)
    n, h, w, _ = x.shape
    zeros, ones = np.zeros(n), np.ones(n)
    if name == 'ShearX':
        return _affine(x, ones, v, zeros, zeros, ones, zeros)
    if name == 'ShearY':
        return _affine(x, ones, zeros, zeros, v, ones, zeros)
    if name == 'TranslateX':  # Pillow's pure-translation path rounds the shift: floor(t + 0.5)
        return _shift(x, np.floor(v * w + 0.5).astype(np.int64), np.zeros(n, np.int64))
    if name == 'TranslateY':
        return _shift(x, np.zeros(n, np.int64), np.floor(v * h + 0.5).astype(np.int64))
    if name == 'Rotate':
        return _rotate(x, v)
    if name == 'Solarize':  # x < T stays, else inverted
        return xp.where(x < xp.asarray(v)[:, None, None, None], x, 255 - x)
    if name == 'Posterize':  # keep the top int(v) bits
        mask = (255 & ~(2 ** (8 - v.astype(np.int64)) - 1)).astype(np.uint8)
        return x & xp.asarray(mask)[:, None, None, None]
    if name == 'Contrast':  # blend with the mean grey level, rounded
        grey_mean = _grey(x).reshape(n, -1).sum(axis=1) / (h * w)
        degenerate = xp.broadcast_to(xp.floor(grey_mean + 0.5).astype(np.uint8)[:, None, None, None], x.shape)
        return _blend(degenerate, x, v)
    if name == 'Color':  # blend with the grey image
        return _blend(xp.repeat(_grey(x)[..., None], x.shape[3], axis=3), x, v)
    if name == 'Brightness':  # blend with black
        return _blend(xp.zeros_like(x), x, v)
    if name == 'Sharpness':  # blend with the smoothed image
        return _blend(_smooth(x), x, v)
    return _cutout_abs(x, v * w, *centres)  # Cutout: a fraction of the side


def policy_arrays(policy):
    """A policy (list of sub-policies [[name, p, level], ...]) as arrays (S, K): op index, p, level."""
    ops = np.array([[OPS.index(name) for name, _, _ in sub] for sub in policy])
    probs = np.array([[p for _, p, _ in sub] for sub in policy])
    levels = np.array([[level for _, _, level in sub] for sub in policy])
    return ops, probs, levels


def draw(policy, n, rng):
    """The reference's draws for n images, all at once: one sub-policy each, uniformly; each of its
    K ops applied with its probability (skipped when u > p); value = level * (max - min) + min,
    negated with probability 1/2 for the geometric ops. policy: policy_arrays(...).
    Returns chosen (N,), op (N, K), value (N, K), applied (N, K)."""
    ops, probs, levels = policy
    chosen = rng.integers(0, len(ops), n)
    applied = rng.random((n, ops.shape[1])) <= probs[chosen]
    lo, hi = np.array([RANGES[name] for name in OPS], np.float64).T  # (15,) each
    op = ops[chosen]
    value = levels[chosen] * (hi - lo)[op] + lo[op]
    flip = (rng.random(op.shape) < 0.5) & np.isin(op, [OPS.index(name) for name in SIGNED])
    return chosen, op, np.where(flip, -value, value), applied


def plan(policy, n, rng, size=(32, 32)):
    """Every draw the policy makes for a batch of n images of size (H, W), on the host and in the
    reference's order (draw(), then Cutout's centres as its ops come): a list of
    (slot, op name, image indices, values, Cutout centres or None), in the order they apply."""
    _, op, value, applied = draw(policy, n, rng)
    steps = []
    for slot in range(op.shape[1]):
        for k, name in enumerate(OPS):
            which = np.flatnonzero(applied[:, slot] & (op[:, slot] == k))
            if len(which):
                centres = _cutout_centres(len(which), *size, rng) if name == 'Cutout' else None
                steps.append((slot, name, which, value[which, slot], centres))
    return steps


def join(plans, n):
    """The plans of consecutive batches of n images as one plan for the batches side by side:
    the steps of one slot and op merged, so that each op runs once for them all. Each image still
    meets its ops in its slots' order, and every op treats each image on its own, so the joined
    plan gives each image what its own batch's plan gives it."""
    parts = {}  # (slot, op index) -> that step of each batch's plan
    for i, steps in enumerate(plans):
        for slot, name, which, value, centres in steps:
            parts.setdefault((slot, OPS.index(name)), []).append((which + i * n, value, centres))
    joined = []
    for (slot, k), part in sorted(parts.items()):  # plan()'s order: by slot, then by op
        which, value, centres = zip(*part)
        if centres[0] is None:
            centres = None
        else:  # Cutout: the batches' cx side by side, and their cy
            centres = tuple(np.concatenate(c) for c in zip(*centres))
        joined.append((slot, OPS[k], np.concatenate(which), np.concatenate(value), centres))
    return joined


def apply_plan(x, steps):
    """uint8 images (N, H, W, C) -> augmented copies: each image through its sub-policy's ops in
    order, the second op seeing the first's output. The loop is over op slots and op names,
    never over images. Each step moves its few hundred indices and values to x's device: which
    op touches which image is decided on the host."""
    xp = get_array_module(x)
    x = x.copy()
    for _, name, which, value, centres in steps:
        idx = xp.asarray(which)
        x[idx] = _op(name, x[idx], value, centres)
    return x


def apply_policy(x, policy, rng):
    """plan() then apply_plan(): one sub-policy per image of x, drawn from rng."""
    return apply_plan(x, plan(policy, len(x), rng, x.shape[1:3]))
