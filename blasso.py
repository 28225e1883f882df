"""beta-LASSO (the paper's Algorithm 1) and the SGD baseline, as in-place array updates.

Each update is written once, as NumPy lines on one array. Updates modify parameters in place:
layers hold references to their arrays, so rebinding (p = p - ...) would silently leave the
model training a stale copy. @elementwise (backend.py) runs the lines on cache-sized pieces on a
CPU, and a fused kernel doing the same arithmetic on a GPU.
"""
import numpy as np

from backend import elementwise, get_array_module
from models import leaves


@elementwise
def blasso_update(p, g, lr, lam, threshold):
    """Algorithm 1's two lines on one parameter array p with gradient g, in place."""
    p -= lr * (g + lam * np.sign(p))  # a step on the loss plus lam * ||p||_1
    p *= np.abs(p) >= threshold       # the hard threshold: zero every weight below beta * lam


def blasso_step(groups, lr, beta):
    """One step of beta-LASSO on every (param, grad, lam) in groups. Algorithm 1, lines 2-3:
        theta_t <- theta_{t-1} - eta (grad f(theta_{t-1}) + lambda sign(theta_{t-1}))
        theta_t <- theta_t (|theta_t| >= beta lambda)
    The threshold runs every step and is beta * lam, not scaled by lr, as written there; no
    momentum (App. A.2). beta = 0 is plain l1 with no zeroing; lam = 0 (biases, batch-norm) is
    plain SGD."""
    for p, g, lam in groups:
        blasso_update(p, g, lr, lam, beta * lam)


@elementwise
def sgd_update(p, g, lr, weight_decay):
    p -= lr * (g + weight_decay * p)


@elementwise
def momentum_update(p, v, g, lr, momentum, weight_decay):
    v *= momentum
    v += g + weight_decay * p
    p -= lr * v


def sgd_step(params, lr, momentum, weight_decay, velocity):
    """SGD with PyTorch's semantics (dampening 0, no Nesterov) on every (name, param, grad):
        v = momentum * v + (grad + weight_decay * p)   (v = 0 before the first step);  p -= lr * v
    `velocity` maps names to buffers, filled on the first call: the optimizer state a checkpoint
    keeps. With momentum 0 there is none."""
    for name, p, g in params:
        if not momentum:
            sgd_update(p, g, lr, weight_decay)
            continue
        if name not in velocity:
            velocity[name] = get_array_module(p).zeros_like(p)
        momentum_update(p, velocity[name], g, lr, momentum, weight_decay)


def param_groups(model, lam_conv, lam_fc, verbose=True):
    """(param, grad, lam) for every trainable array of model, for blasso_step (nanoGPT's
    parameter groups). lam_conv for the weights of the convolution-like layers (the first layer
    of the S-* nets, the eight conv-equivalent layers of the D-* nets, every convolution of
    ResNet18; §4.1: a higher lambda there), lam_fc for the other weight matrices, and 0 for
    biases and batch-norm parameters: neither penalised nor thresholded."""
    groups, sizes = [], {'conv-like': 0, 'fc': 0, 'unpenalised': 0}
    for layer in leaves(model.layers):
        for name, p, g in layer.params():
            kind = 'unpenalised' if p.ndim < 2 else 'conv-like' if getattr(layer, 'conv_like', False) else 'fc'
            groups.append((p, g, {'conv-like': lam_conv, 'fc': lam_fc, 'unpenalised': 0.0}[kind]))
            sizes[kind] += p.size
    if verbose:
        print(f'beta-LASSO groups: conv-like {sizes["conv-like"]:,} weights (lam {lam_conv:g}), '
              f'fc {sizes["fc"]:,} weights (lam {lam_fc:g}), '
              f'unpenalised {sizes["unpenalised"]:,} biases and batch-norm parameters')
    return groups


def count_nonzero(model):
    """Non-zero weights per weight layer ('3.W': n) and in all ('total'), as ints (a sync point)."""
    counts = {name: int(get_array_module(p).count_nonzero(p)) for name, p, _ in model.params() if p.ndim >= 2}
    counts['total'] = sum(counts.values())
    return counts
