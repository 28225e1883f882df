"""The numeric-gradient check (CS231n's eval_numerical_gradient_array) and its error measure."""
import numpy as np


def numerical_grad(f, x, dout, h=1e-5, indices=None):
    """Centred differences of sum(f() * dout) with respect to the array x, which f reads.
    x is perturbed in place and restored. indices: flat positions to check (default: all)."""
    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size) if indices is None else indices:
        old = flat_x[i]
        flat_x[i] = old + h
        plus = np.sum(f() * dout)
        flat_x[i] = old - h
        minus = np.sum(f() * dout)
        flat_x[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b):
    """||a - b|| / (||a|| + ||b||): scale-free, and not blown up by entries that are ~0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)
