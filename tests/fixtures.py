"""Tiny datasets in the real on-disk formats, made on the spot (tests never touch the network)."""
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np


def learnable_images(n, num_classes, seed):
    """uint8 (n, 32, 32, 3) images whose class is a bright pattern plus noise: easy to learn."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(1234).integers(0, 2, (num_classes, 32, 32, 3)) * 160
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = templates[labels] + rng.integers(0, 96, (n, 32, 32, 3))
    return images.astype(np.uint8), labels


def cifar_batch(images, labels, label_key):
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # R, G then B planes
    return {b'batch_label': b'tiny', label_key: [int(v) for v in labels], b'data': rows,
            b'filenames': [b'img%d.png' % i for i in range(len(images))]}


def _add(tar, name, obj):
    payload = pickle.dumps(obj)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_cifar10(directory, per_batch=20, test=20, seed=0):
    """cifar-10-python.tar.gz with five training batches of per_batch images; returns its path."""
    path = os.path.join(directory, 'cifar-10-python.tar.gz')
    with tarfile.open(path, 'w:gz') as tar:
        for i in range(1, 6):
            x, y = learnable_images(per_batch, 10, seed + i)
            _add(tar, f'cifar-10-batches-py/data_batch_{i}', cifar_batch(x, y, b'labels'))
        x, y = learnable_images(test, 10, seed + 99)
        _add(tar, 'cifar-10-batches-py/test_batch', cifar_batch(x, y, b'labels'))
        _add(tar, 'cifar-10-batches-py/batches.meta', {b'label_names': [b'c%d' % i for i in range(10)]})
    return path


def make_extracted_cifar10(directory):
    """The tiny CIFAR-10 extracted into directory: train.py subprocesses read a folder without an
    MD5 check (the archive's MD5 is made here, not the real one)."""
    import data
    archive = make_cifar10(directory, per_batch=40, test=40)
    saved = data.DATASETS['cifar10']['md5']
    data.DATASETS['cifar10']['md5'] = md5(archive)
    try:
        data.load('cifar10', directory)
    finally:
        data.DATASETS['cifar10']['md5'] = saved
    os.remove(archive)
    return directory


def make_cifar100(directory, train=30, test=10, seed=0):
    path = os.path.join(directory, 'cifar-100-python.tar.gz')
    with tarfile.open(path, 'w:gz') as tar:
        for name, n in (('train', train), ('test', test)):
            x, y = learnable_images(n, 100, seed + n)
            batch = cifar_batch(x, y, b'fine_labels')
            batch[b'coarse_labels'] = [int(v) // 5 for v in y]
            _add(tar, f'cifar-100-python/{name}', batch)
        _add(tar, 'cifar-100-python/meta', {b'fine_label_names': [b'f%d' % i for i in range(100)]})
    return path


def make_svhn(directory, train=25, test=15, extra=0, seed=0):
    """train_32x32.mat and test_32x32.mat as MATLAB v5 files: X (32, 32, 3, N), y (N, 1) in 1..10."""
    from scipy.io import savemat
    paths = {}
    for name, n in (('train', train), ('test', test), ('extra', extra)):
        if n:
            x, y = learnable_images(n, 10, seed + n)
            y = np.where(y == 0, 10, y)  # SVHN writes the digit 0 as label 10
            paths[name] = os.path.join(directory, f'{name}_32x32.mat')
            savemat(paths[name], {'X': x.transpose(1, 2, 3, 0), 'y': y.reshape(-1, 1).astype(np.uint8)})
    return paths


def md5(path):
    return hashlib.md5(open(path, 'rb').read()).hexdigest()
