"""Where arrays live, and the few lines that exist only for a backend's speed.

Arrays are NumPy or CuPy and carry their backend with them: one code path serves both
(Chainer's get_array_module idiom). The layers and the optimizers read as the math; what a
backend needs to run that math fast is here, each piece with its reason:

- `elementwise`: blasso.py's in-place updates run on a CPU in cache-sized pieces, and on a
  GPU as one fused kernel per array.
- `bincount`: counts without reading anything back from a GPU.
- `fft_module`: the FFTs behind models.FFTConv2d.
"""
import functools

import numpy as np

try:
    import cupy
except ImportError:  # no GPU stack: NumPy only
    cupy = None


def get_array_module(x):
    """numpy or cupy, whichever x lives in."""
    return cupy.get_array_module(x) if cupy is not None else np


def gpu_available():
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cupy installed but no driver or no device
        return False


def is_array(x):
    return isinstance(x, np.ndarray) or (cupy is not None and isinstance(x, cupy.ndarray))


def to_numpy(x):
    """A NumPy array of x, wherever it lives (a device-to-host copy for CuPy arrays)."""
    return cupy.asnumpy(x) if cupy is not None and isinstance(x, cupy.ndarray) else np.asarray(x)


def bincount(values, length):
    """np.bincount(values, minlength=length) for non-negative ints below length. cupy.bincount
    reads back to the host twice per call, to check for negative values and to size its output
    (cupy/_statistics/histogram.py), which stalls the GPU; scatter-adding ones into an array of
    the known length reads nothing back."""
    xp = get_array_module(values)
    if xp is np:
        return np.bincount(values, minlength=length)
    counts = cupy.zeros(length, np.int32)  # add.at's atomics take int32, not int64
    cupy.add.at(counts, values, 1)
    return counts.astype(np.int64)


def fft_module(x):
    """The FFTs for x's backend: scipy.fft for NumPy arrays, cupyx.scipy.fft for CuPy ones (the
    same functions and arguments). Not numpy.fft: on the channels-last (N, H, W, C) arrays of
    FFTConv2d, transforming axes 1 and 2, scipy.fft's rfft2 took 2.2 ms where numpy.fft's took
    22 (N 64, 40 x 40, C 8, float32; 2 cores)."""
    if cupy is not None and isinstance(x, cupy.ndarray):
        import cupyx.scipy.fft
        return cupyx.scipy.fft
    import scipy.fft
    return scipy.fft


# ----------------------------------------------------------------------------- fused updates

# On a CPU an update runs on flat pieces of this many elements: a piece and the temporaries its
# NumPy expression makes stay in cache, and no step allocates a weight-sized temporary
# (bench.py's update column, S-FC at alpha 8 on 2 cores: beta-LASSO's update takes 30 ms on whole
# arrays against 16 ms in pieces, SGD's 16 against 11).
CHUNK = 1 << 16

# The CUDA twins of blasso.py's updates, keyed by the Python function each restates:
# (inputs, outputs updated in place, body). The function's arguments are the outputs, then the
# inputs, in these orders. T is the parameters' dtype; every scalar is cast to it, as NumPy casts
# a Python float against a float32 array. One pass over the weights, where the NumPy lines on
# CuPy would launch about eight kernels and allocate four weight-sized temporaries.
KERNELS = {
    'blasso_update': ('T g, T lr, T lam, T threshold', 'T p', """
        T sign = (p > 0) - (p < 0);          // sign(p)
        p = p - lr * (g + lam * sign);       // p -= lr * (g + lam * sign(p))
        p = p * (T)(fabs(p) >= threshold);   // p *= |p| >= threshold   (a product, so -0.0 as NumPy)
    """),
    'sgd_update': ('T g, T lr, T weight_decay', 'T p', """
        p = p - lr * (g + weight_decay * p); // p -= lr * (g + weight_decay * p)
    """),
    'momentum_update': ('T g, T lr, T momentum, T weight_decay', 'T p, T v', """
        v = momentum * v + (g + weight_decay * p);  // v *= momentum; v += g + weight_decay * p
        p = p - lr * v;                             // p -= lr * v
    """),
}


@functools.lru_cache(maxsize=None)
def _kernel(name):
    """One compiled cupy.ElementwiseKernel, built on first use. --fmad=false: no multiply-add is
    contracted, so the arithmetic is NumPy's, operation for operation (tests/test_blasso.py
    compiles each body as C and compares its bits with NumPy's on edge cases). One difference
    stays: CuPy appends -ftz=true to every compile, after these options (cupy/cuda/compiler.py),
    so a GPU flushes float32 subnormals to zero where NumPy keeps them."""
    inputs, outputs, body = KERNELS[name]
    return cupy.ElementwiseKernel(inputs, outputs, body, name, options=('--fmad=false',))


def elementwise(update):
    """Decorator for an in-place update whose arguments are arrays of one size, then scalars.
    On NumPy arrays it runs on CHUNK-element pieces of them; on CuPy arrays, the kernel of the
    same name in KERNELS runs instead, over the whole arrays."""
    @functools.wraps(update)
    def run(*args):
        count = next(i for i, a in enumerate(args + (None,)) if not is_array(a))  # NumPy scalars are not arrays
        arrays, scalars = args[:count], args[count:]
        if get_array_module(arrays[0]) is not np:
            outputs = KERNELS[update.__name__][1].count(',') + 1
            return _kernel(update.__name__)(*arrays[outputs:], *scalars, *arrays[:outputs])
        flat = [a.reshape(-1) for a in arrays]  # views: parameters and gradients are contiguous
        for start in range(0, flat[0].size, CHUNK):
            update(*(f[start:start + CHUNK] for f in flat), *scalars)
    return run
