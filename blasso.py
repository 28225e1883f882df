"""beta-LASSO (the paper's Algorithm 1) and the SGD baseline, as in-place array updates.

Updates modify each parameter in place: layers hold references to their arrays, so rebinding
(p = p - ...) would silently leave the model training a stale copy.

On the CPU each update is the NumPy lines below, the readable statement of the algorithm. On a
GPU each is one fused CUDA kernel (cupy.ElementwiseKernel) doing the same arithmetic in the same
order, compiled with --fmad=false so that no multiply-add is contracted and the result matches
NumPy's to the bit: one pass over the weights instead of about eight kernels and four
temporaries. Each kernel's body sits beside the NumPy lines it restates.
"""
import functools

import numpy as np

from models import get_array_module, leaves

# On the CPU arrays are updated in flat pieces of this many elements: a piece and its few
# temporaries stay in cache, and no step allocates a weight-sized temporary.
CHUNK = 1 << 16


def _pieces(*arrays):
    """Equal-sized contiguous arrays -> lists of matching flat views, CHUNK elements at a time."""
    flat = [a.reshape(-1) for a in arrays]  # views: params and grads are contiguous
    for start in range(0, flat[0].size, CHUNK):
        yield [f[start:start + CHUNK] for f in flat]


# The CUDA twins of the NumPy updates below: (inputs, outputs updated in place, body). T is the
# parameters' dtype; every scalar is cast to it, as NumPy casts a Python float against a float32
# array. Algorithm 1:
BLASSO_KERNEL = ('T g, T lr, T lam, T threshold', 'T p', """
    T sign = (p > 0) - (p < 0);          // xp.sign(p)
    p = p - lr * (g + lam * sign);       // p -= lr * (g + lam * sign(p))
    p = p * (T)(fabs(p) >= threshold);   // p *= |p| >= beta * lam   (a product, so -0.0 as NumPy)
""")
# SGD, PyTorch's semantics:
SGD_KERNEL = ('T g, T lr, T momentum, T weight_decay', 'T p, T v', """
    T d = g + weight_decay * p;          // d = g + weight_decay * p
    v = momentum * v + d;                // v *= momentum; v += d
    p = p - lr * v;                      // p -= lr * v
""")
SGD_PLAIN_KERNEL = ('T g, T lr, T weight_decay', 'T p', """
    p = p - lr * (g + weight_decay * p); // momentum 0: no velocity
""")


@functools.lru_cache(maxsize=None)
def _kernel(name):
    """One compiled cupy.ElementwiseKernel, built on first use (GPU only)."""
    import cupy
    inputs, outputs, body = {'blasso': BLASSO_KERNEL, 'sgd': SGD_KERNEL, 'sgd_plain': SGD_PLAIN_KERNEL}[name]
    return cupy.ElementwiseKernel(inputs, outputs, body, f'{name}_step', options=('--fmad=false',))


def blasso_step(groups, lr, beta):
    """One step of Algorithm 1 on every (param, grad, lam) in groups, in place:
        theta <- theta - lr * (grad + lam * sign(theta))
        theta <- theta * 1(|theta| >= beta * lam)
    The threshold runs every step and is beta*lam, not scaled by lr (Algorithm 1); beta-LASSO
    uses no momentum (App. A.2). beta = 0 is plain l1 with no zeroing; lam = 0 is plain SGD.
    """
    for p, g, lam in groups:
        if get_array_module(p) is not np:  # GPU: one fused kernel over the whole array (BLASSO_KERNEL)
            _kernel('blasso')(g, lr, lam, beta * lam if lam else 0.0, p)
            continue
        for p_, g_ in _pieces(p, g):
            if lam:
                p_ -= lr * (g_ + lam * np.sign(p_))
            else:
                p_ -= lr * g_
            if lam and beta:
                p_ *= np.abs(p_) >= beta * lam


def sgd_step(params, lr, momentum, weight_decay, velocity):
    """SGD with PyTorch's semantics (dampening 0, no Nesterov) on every (name, param, grad):
        d = grad + weight_decay * p;  v = momentum * v + d  (v = d on the first step);  p -= lr * v
    `velocity` maps names to buffers and is filled on the first call: it is the optimizer state
    a checkpoint keeps."""
    for name, p, g in params:
        xp = get_array_module(p)
        if momentum and name not in velocity:
            velocity[name] = xp.zeros_like(p)  # momentum * 0 + d = d
        if xp is not np:  # GPU: one fused kernel, in place (SGD_KERNEL, SGD_PLAIN_KERNEL)
            if momentum:
                _kernel('sgd')(g, lr, momentum, weight_decay, p, velocity[name])
            else:
                _kernel('sgd_plain')(g, lr, weight_decay, p)
            continue
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
