"""beta-LASSO (the paper's Algorithm 1) and the SGD baseline, as in-place array updates.

Updates modify each parameter in place: layers hold references to their arrays, so rebinding
(p = p - ...) would silently leave the model training a stale copy.
"""
import numpy as np

from models import get_array_module, leaves

# Arrays are updated in flat pieces of this many elements: on the CPU a piece and its few
# temporaries stay in cache, and no step allocates a weight-sized temporary on either backend.
CHUNK = {'numpy': 1 << 16, 'cupy': 1 << 24}


def _pieces(*arrays):
    """Equal-sized contiguous arrays -> lists of matching flat views, CHUNK elements at a time."""
    xp = get_array_module(arrays[0])
    flat = [a.reshape(-1) for a in arrays]  # views: params and grads are contiguous
    size = CHUNK[xp.__name__]
    for start in range(0, flat[0].size, size):
        yield [f[start:start + size] for f in flat]


def blasso_step(groups, lr, beta):
    """One step of Algorithm 1 on every (param, grad, lam) in groups, in place:
        theta <- theta - lr * (grad + lam * sign(theta))
        theta <- theta * 1(|theta| >= beta * lam)
    The threshold runs every step and is beta*lam, not scaled by lr (Algorithm 1); beta-LASSO
    uses no momentum (App. A.2). beta = 0 is plain l1 with no zeroing; lam = 0 is plain SGD.
    """
    for p, g, lam in groups:
        xp = get_array_module(p)
        for p_, g_ in _pieces(p, g):
            if lam:
                p_ -= lr * (g_ + lam * xp.sign(p_))
            else:
                p_ -= lr * g_
            if lam and beta:
                p_ *= xp.abs(p_) >= beta * lam


def sgd_step(params, lr, momentum, weight_decay, velocity):
    """SGD with PyTorch's semantics (dampening 0, no Nesterov) on every (name, param, grad):
        d = grad + weight_decay * p;  v = momentum * v + d  (v = d on the first step);  p -= lr * v
    `velocity` maps names to buffers and is filled on the first call: it is the optimizer state
    a checkpoint keeps."""
    for name, p, g in params:
        if momentum and name not in velocity:
            velocity[name] = get_array_module(p).zeros_like(p)  # momentum * 0 + d = d
        for piece in _pieces(p, g, velocity[name]) if momentum else _pieces(p, g):
            p_, g_ = piece[0], piece[1]
            d = g_ + weight_decay * p_ if weight_decay else g_
            if momentum:
                v_ = piece[2]
                v_ *= momentum
                v_ += d
                d = v_
            p_ -= lr * d


def param_groups(model, lam_conv, lam_fc, verbose=True):
    """(param, grad, lam) for every trainable array of model, for blasso_step.
    lam_conv for the weights of the convolution-like layers (the first layer of the S-* nets,
    the eight conv-equivalent layers of the D-* nets, every convolution of ResNet18), lam_fc for the other weight matrices, and
    0 for biases and batch-norm parameters: neither penalised nor thresholded."""
    groups, sizes = [], {'conv-like': 0, 'fc': 0, 'unpenalised': 0}
    for layer in leaves(model.layers):
        for name, p, g in layer.params():
            if p.ndim < 2:
                kind, lam = 'unpenalised', 0.0
            elif getattr(layer, 'conv_like', False):
                kind, lam = 'conv-like', lam_conv
            else:
                kind, lam = 'fc', lam_fc
            groups.append((p, g, lam))
            sizes[kind] += p.size
    if verbose:
        print(f'beta-LASSO groups: conv-like {sizes["conv-like"]:,} weights (lam {lam_conv:g}), '
              f'fc {sizes["fc"]:,} weights (lam {lam_fc:g}), '
              f'unpenalised {sizes["unpenalised"]:,} biases and batch-norm parameters')
    return groups


def count_nonzero(model):
    """Non-zero weights per weight layer ('3.W': n) and in all ('total'), as ints (a sync point)."""
    counts = {}
    for name, p, _ in model.params():
        if p.ndim >= 2:
            counts[name] = int(get_array_module(p).count_nonzero(p))
    counts['total'] = sum(counts.values())
    return counts
