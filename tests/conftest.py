import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import models  # noqa: E402

# the real CIFAR-10 copy beside the checkout, when there is one (never copied into the project)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')
HAVE_CIFAR10 = os.path.isdir(os.path.join(SHARED_DATA, 'cifar-10-batches-py'))


@pytest.fixture(params=['numpy', 'cupy'])
def xp(request):
    """Each backend: NumPy always, CuPy when a GPU is present."""
    if request.param == 'numpy':
        return np
    if not models.gpu_available():
        pytest.skip('no GPU: CuPy backend not tested')
    return models.cupy
