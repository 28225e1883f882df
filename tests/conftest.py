import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import backend  # noqa: E402

# the real CIFAR-10, found as users find it: a folder holding cifar-10-batches-py, named by $BLASSO_DATA
REAL_DATA = os.environ.get('BLASSO_DATA', '')
HAVE_CIFAR10 = bool(REAL_DATA) and os.path.isdir(os.path.join(REAL_DATA, 'cifar-10-batches-py'))
NO_CIFAR10 = 'the real CIFAR-10: set BLASSO_DATA to a folder with cifar-10-batches-py/'


@pytest.fixture(params=['numpy', 'cupy'])
def xp(request):
    """Each backend: NumPy always, CuPy when a GPU is present."""
    if request.param == 'numpy':
        return np
    if not backend.gpu_available():
        pytest.skip('no GPU: CuPy backend not tested')
    return backend.cupy
