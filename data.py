"""CIFAR-10, CIFAR-100 and SVHN: downloaded and verified, decoded, augmented on the device, batched.
Also NLGP, a data model in which locality can emerge in minutes, and its Gaussian twin: made, not
downloaded.

    python data.py --bench            # time one CIFAR-10 training epoch of the data path

Datasets are read from their canonical distributions in --data-dir (default ./data, or the
BLASSO_DATA environment variable): the CIFAR archives or their extracted folders, SVHN's .mat
files. Whatever is missing is downloaded and checked against the published MD5 first.
"""
import argparse
import hashlib
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import time
import urllib.request
import zlib

import numpy as np
from scipy.special import erf
from tqdm import tqdm

import faa
from backend import get_array_module, to_numpy
from faa import faa_op  # noqa: F401  the public entry point of each Fast AutoAugment op: data.faa_op

DATA_DIR = os.environ.get('BLASSO_DATA', 'data')
TIMEOUT = 30  # seconds without a byte before a download gives up

CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/'
SVHN_URL = 'http://ufldl.stanford.edu/housenumbers/'
DATASETS = {
    'cifar10': dict(archive='cifar-10-python.tar.gz', url=CIFAR_URL, md5='c58f30108f718f92721af3b95e74349a',
                    folder='cifar-10-batches-py', label_key=b'labels', num_classes=10, sizes=(50000, 10000),
                    train=[f'data_batch_{i}' for i in range(1, 6)], test=['test_batch'], cutout=16,
                    policy='fa_reduced_cifar10'),
    'cifar100': dict(archive='cifar-100-python.tar.gz', url=CIFAR_URL, md5='eb9058c3a382ffc7106e4002c42a8d85',
                     folder='cifar-100-python', label_key=b'fine_labels', num_classes=100, sizes=(50000, 10000),
                     train=['train'], test=['test'], cutout=16,
                     policy='fa_reduced_cifar10'),  # the reference has no CIFAR-100 policy; it uses CIFAR-10's
    'svhn': dict(url=SVHN_URL, num_classes=10, sizes=(73257, 26032), cutout=20, policy='fa_reduced_svhn',  # kakaobrain's conf
                 md5={'train_32x32.mat': 'e26dedcc434d2e4c54c9b2d4a06d8373',
                      'test_32x32.mat': 'eb5a983be6a315427106f1b164d9cef3',
                      'extra_32x32.mat': 'a93ce644f1a588dc4d68dda5feec44a7'}),
    # made by nlgp_images(): two classes, fields of two correlation lengths; no augmentation policy
    'nlgp': dict(num_classes=2, sizes=(20000, 4000), cutout=0, policy=None),
    'nlgp-gaussian': dict(num_classes=2, sizes=(20000, 4000), cutout=0, policy=None),
}
NLGP_XI, NLGP_GAIN = (1.0, 3.0), 3.0  # defaults: the two classes' correlation lengths (pixels), the gain


class DataError(Exception):
    """A dataset problem the user can fix; the message is one line saying how."""


def md5sum(path):
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, path, md5):
    """url -> path via a temporary file that is renamed only once its MD5 is right."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.download-')
    try:
        with os.fdopen(fd, 'wb') as f, urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            size = int(response.headers.get('Content-Length') or 0) or None
            with tqdm(total=size, unit='B', unit_scale=True, desc=os.path.basename(path)) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        if md5sum(tmp) != md5:
            raise DataError(f'{url}: the download has the wrong MD5 (expected {md5}); try again')
        os.replace(tmp, path)
    except OSError as e:  # URLError, timeouts and refused connections are all OSErrors
        raise DataError(f'could not download {url} ({getattr(e, "reason", e)}); '
                        f'download it by hand into {os.path.dirname(path) or "."}') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch(filename, url, md5, data_dir):
    """The verified path of a canonical file in data_dir, downloading it if it is not there."""
    path = os.path.join(data_dir, filename)
    if not os.path.exists(path):
        download(url + filename, path, md5)
    elif md5sum(path) != md5:
        raise DataError(f'{path} has the wrong MD5 (expected {md5}): it is truncated or not the '
                        f'canonical file; delete it to download it again')
    return path


def extract(archive, folder, data_dir):
    """Unpack archive's `folder` into data_dir via a temporary folder renamed when complete."""
    tmp = tempfile.mkdtemp(dir=data_dir, prefix='.extract-')
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter='data')
        if not os.path.isdir(os.path.join(tmp, folder)):
            raise DataError(f'{archive} holds no folder {folder}; it is not the canonical archive')
        os.replace(os.path.join(tmp, folder), os.path.join(data_dir, folder))
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f'{archive} is truncated or corrupt ({e}); delete it to download it again') from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_cifar(spec, data_dir):
    """CIFAR-10/100 from the extracted folder, or from the archive (extracted on the way)."""
    folder = os.path.join(data_dir, spec['folder'])
    if not os.path.isdir(folder):
        extract(fetch(spec['archive'], spec['url'], spec['md5'], data_dir), spec['folder'], data_dir)
    splits = []
    for names in (spec['train'], spec['test']):
        images, labels = [], []
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise DataError(f'{path} is missing: put the complete {spec["folder"]} folder (or '
                                f'{spec["archive"]}) in {data_dir}')
            try:
                with open(path, 'rb') as f:
                    batch = pickle.load(f, encoding='bytes')
                x = np.asarray(batch[b'data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                images.append(x)
                labels.append(np.asarray(batch[spec['label_key']], np.int64))
            except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
                raise DataError(f'{path} is not a readable CIFAR batch ({e!r}); replace it') from None
        splits += [np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)]
    return splits


def read_svhn(spec, data_dir, extra=False):
    """SVHN cropped digits from the .mat files (MATLAB v5; label 10 means the digit 0)."""
    from scipy.io import loadmat  # only SVHN needs scipy

    def read(name):
        path = fetch(name, spec['url'], spec['md5'][name], data_dir)
        try:
            mat = loadmat(path)
            x, y = np.asarray(mat['X'], np.uint8).transpose(3, 0, 1, 2), np.asarray(mat['y'], np.int64).reshape(-1)
        except (ValueError, KeyError, OSError, TypeError) as e:
            raise DataError(f'{path} is not a readable SVHN .mat file ({e!r}); replace it') from None
        return np.ascontiguousarray(x), np.where(y == 10, 0, y)

    x_train, y_train = read('train_32x32.mat')
    if extra:  # the kakaobrain pipeline trains on train + extra
        x_extra, y_extra = read('extra_32x32.mat')
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    return [x_train, y_train, *read('test_32x32.mat')]


def load(name, data_dir=DATA_DIR, extra=False, xi=NLGP_XI, gain=NLGP_GAIN):
    """(x_train, y_train, x_test, y_test): uint8 images (N, 32, 32, 3) and int64 labels.
    xi, gain: NLGP's correlation lengths and gain (nlgp and nlgp-gaussian only)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if name.startswith('nlgp'):
        gaussian = name == 'nlgp-gaussian'
        return [part for split, n in enumerate(spec['sizes'])  # seeds 0 and 1: the same sets in every run
                for part in nlgp_images(n, xi, gain, gaussian=gaussian, seed=split)]
    os.makedirs(data_dir, exist_ok=True)
    splits = read_svhn(spec, data_dir, extra) if name == 'svhn' else read_cifar(spec, data_dir)
    for split, x, y, canonical in zip(('train', 'test'), splits[0::2], splits[1::2], spec['sizes']):
        if x.shape[1:] != (32, 32, 3) or len(x) != len(y) or len(x) == 0:
            raise DataError(f'{name} {split}: {x.shape} images for {len(y)} labels; expected (N, 32, 32, 3) for N labels')
        if y.min() < 0 or y.max() >= spec['num_classes']:
            raise DataError(f'{name} {split}: labels outside 0..{spec["num_classes"] - 1}')
        if len(x) != canonical and not (name == 'svhn' and extra and split == 'train'):
            print(f'note: {name} {split} has {len(x)} images (the canonical release has {canonical})')
    return splits


# ----------------------------------------------------------------------------- NLGP
# Ingrosso & Goldt, "Data-driven emergence of convolutional structure in neural networks"
# (PNAS 2022): a two-layer fully connected net trained by SGD learns local receptive fields when
# its inputs have non-Gaussian local structure, and not on Gaussian inputs of the same
# covariance. Their data model: a translation-invariant Gaussian field z with correlation
# length xi, pushed through erf with a gain g and rescaled to unit variance,
#     x = erf(g z / sqrt(2)) / Z(g),   Z(g)^2 = E[erf(g z / sqrt(2))^2] = (2/pi) arcsin(g^2 / (1 + g^2)).
# g -> 0 gives back a Gaussian field; large g gives images of nearly +-1 only. The task: which of
# two correlation lengths made the image. Here the fields are periodic 32 x 32 images (a torus)
# with covariance exp(-d^2 / xi^2) at torus distance d, one field drawn in grey on 3 channels so
# that every net and picture of the project applies unchanged.

def torus_distance2(size):
    """(size, size): the squared distance of each pixel from pixel (0, 0) on a size x size torus."""
    d = np.minimum(np.arange(size), size - np.arange(size))
    return d[:, None] ** 2 + d[None, :] ** 2


def nlgp_covariance(xi, gain, size=32):
    """(size, size): the NLGP's covariance between pixel (0, 0) and each pixel, by the arcsine law
    E[erf(a u) erf(a v)] = (2/pi) arcsin(2 a^2 c / (1 + 2 a^2)) for unit Gaussians u, v of
    correlation c, here with a = g / sqrt(2); at g -> 0 the field's own exp(-d^2 / xi^2)."""
    c = np.exp(-torus_distance2(size) / xi ** 2)
    if gain == 0:
        return c
    return np.arcsin(gain ** 2 * c / (1 + gain ** 2)) / np.arcsin(gain ** 2 / (1 + gain ** 2))


def gaussian_field(n, covariance, rng):
    """n periodic Gaussian fields (n, size, size) with the given stationary covariance (its row
    for pixel (0, 0)): white noise filtered by the square root of the covariance's spectrum."""
    size = covariance.shape[0]
    spectrum = np.clip(np.fft.fft2(covariance).real, 0, None)  # real and even; clip rounding below 0
    noise = np.fft.fft2(rng.standard_normal((n, size, size)))
    return np.fft.ifft2(noise * np.sqrt(spectrum)).real


def nlgp_fields(n, xi, gain, gaussian=False, rng=None, size=32):
    """n fields (n, size, size) of unit variance: NLGP with correlation length xi and gain, or
    (gaussian=True) its Gaussian twin, a Gaussian field with the NLGP's covariance."""
    rng = rng or np.random.default_rng(0)
    if gaussian:
        return gaussian_field(n, nlgp_covariance(xi, gain, size), rng)
    z = gaussian_field(n, np.exp(-torus_distance2(size) / xi ** 2), rng)
    if gain == 0:
        return z
    return erf(gain * z / math.sqrt(2)) / math.sqrt(2 / math.pi * math.asin(gain ** 2 / (1 + gain ** 2)))


def nlgp_images(n, xi=NLGP_XI, gain=NLGP_GAIN, gaussian=False, seed=0, size=32):
    """(x, y): n uint8 images (n, size, size, 3), half of each class (label i: correlation length
    xi[i]) in a seeded order, each a field in grey: 128 + 32 * value, so 32 grey levels per
    standard deviation, clipped to 0..255 (about +-4 standard deviations)."""
    rng = np.random.default_rng([seed, 0x4E4C4750])
    y = rng.permutation(np.arange(n) % len(xi))
    fields = np.empty((n, size, size))
    for label, length in enumerate(xi):
        fields[y == label] = nlgp_fields(int(np.sum(y == label)), length, gain, gaussian, rng, size)
    x = np.clip(np.rint(128 + 32 * fields), 0, 255).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=3), y.astype(np.int64)


def split_validation(x, y, val_size, seed=0):
    """Hold out val_size seeded random training examples: (x_train, y_train, x_val, y_val)."""
    if not 0 <= val_size < len(x):
        raise DataError(f'val_size must be in [0, {len(x)}), got {val_size}')
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = np.sort(order[:val_size]), np.sort(order[val_size:])
    return x[train], y[train], x[val], y[val]


def balanced_subset(y, size, seed=0):
    """Sorted indices of a seeded random subset of `size` examples, as many of each class as can
    be (the first size % classes classes get one more)."""
    classes = np.unique(y)
    per_class = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    rng = np.random.default_rng([seed, size])
    keep = []
    for label, count in zip(classes, per_class):
        members = np.flatnonzero(y == label)
        if count > len(members):
            raise DataError(f'train_size {size} needs {count} images of class {label}; the training split has {len(members)}')
        keep.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(keep))


def channel_stats(x):
    """Per-channel mean and std of uint8 images (N, H, W, C), accumulated in float64 in slices."""
    total, total_sq = np.zeros(x.shape[-1]), np.zeros(x.shape[-1])
    for start in range(0, len(x), 5000):
        part = x[start:start + 5000].astype(np.float64)
        total += part.sum(axis=(0, 1, 2))
        total_sq += (part ** 2).sum(axis=(0, 1, 2))
    count = x.size // x.shape[-1]
    mean = total / count
    return mean, np.sqrt(total_sq / count - mean ** 2)


# ----------------------------------------------------------------------------- augmentation
# Batch-at-once array ops on the training device. Random draws are small (a few ints per
# image) and come from a numpy Generator on the host, so they are identical on both backends;
# each op is split in two, its draws (host) and its array work (x's device), so that the Loader
# can make a whole epoch's draws at once and move them to the device in one copy.

def crop_flip_draws(n, rng, pad=4, crop=True, flip=True):
    """(3, N) int64 on the host: per image the crop's row and column offset into the image
    zero-padded by `pad` (uniform in 0..2*pad), and whether it is flipped (probability 1/2)."""
    dy, dx = rng.integers(0, 2 * pad + 1, (2, n)) if crop else np.full((2, n), pad)
    flipped = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    return np.stack([dy, dx, flipped])


def crop_flip(x, draws, pad=4):
    """x: uint8 (N, H, W, C) -> same shape: the crops and flips of crop_flip_draws (on the host or
    on x's device) as one gather."""
    xp = get_array_module(x)
    n, h, w, _ = x.shape
    dy, dx, flipped = xp.asarray(draws)  # no copy where they are on x's device already
    rows = dy[:, None] + xp.arange(h)  # (N, H) rows of the padded image
    cols = dx[:, None] + xp.where(flipped[:, None] == 1, xp.arange(w)[::-1], xp.arange(w))  # (N, W)
    padded = xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return padded[xp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout_draws(n, h, w, rng):
    """(2, N) int64 on the host: the centre row and column of each image's Cutout square."""
    return np.stack([rng.integers(0, h, n), rng.integers(0, w, n)])


def cutout(x, draws, size):
    """x: (N, C, H, W) -> a copy with one size x size square zeroed per image, centred at
    cutout_draws and clipped at the borders (DeVries & Taylor 2017; kakaobrain's CutoutDefault)."""
    xp = get_array_module(x)
    n, _, h, w = x.shape
    cy, cx = xp.asarray(draws)
    y0, y1 = xp.clip(cy - size // 2, 0, h), xp.clip(cy + size // 2, 0, h)
    x0, x1 = xp.clip(cx - size // 2, 0, w), xp.clip(cx + size // 2, 0, w)
    rows = (xp.arange(h) >= y0[:, None]) & (xp.arange(h) < y1[:, None])  # (N, H)
    cols = (xp.arange(w) >= x0[:, None]) & (xp.arange(w) < x1[:, None])  # (N, W)
    return x * ~(rows[:, None, :, None] & cols[:, None, None, :])


def pixel_permutation(seed, h=32, w=32):
    """One fixed permutation of the h*w pixel positions (the same for train and test)."""
    return np.random.default_rng(seed).permutation(h * w)


def permute_pixels(x, permutation):
    """x: (N, C, H, W) -> pixels moved to permuted positions; channels travel together."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


# Training batches augmented together by Loader.epoch, by backend. On a GPU each augmentation op
# is a few kernel launches whatever the number of images, so a group of 8 launches each op once
# where batches one at a time launch it 8 times; on a CPU a group of 8 is slower (docs/speed.md
# measures both).
GROUP = {'numpy': 1, 'cupy': 8}


class Loader:
    """Batches of one split on the training device: x float32 (B, C, H, W), y int64 (B,).
    Training: reshuffled every epoch, augmented (policy: the name of a Fast AutoAugment policy,
    or None), the last partial batch dropped. Evaluation: in order, not augmented, the last
    partial batch kept. Every random draw is seeded by
    (seed, epoch, step), so the batches depend only on where the run is: a run resumed at any
    step sees exactly the batches an uninterrupted run would have.
    """

    def __init__(self, images, labels, batch_size, xp, mean, std, train=False, seed=0,
                 policy=None, crop=True, flip=True, cutout=0, permutation=None):
        self.images, self.labels = xp.asarray(images), xp.asarray(labels)  # the whole split, moved once
        self.mean = xp.asarray(mean, dtype=np.float32)
        self.inv_std = xp.asarray(1 / np.asarray(std), dtype=np.float32)
        self.batch_size, self.xp, self.train, self.seed = batch_size, xp, train, seed
        self.policy = None if policy is None else faa.policy_arrays(faa.POLICIES[policy])
        self.crop, self.flip, self.cutout = crop, flip, cutout
        self.permutation = None if permutation is None else xp.asarray(permutation)
        self.group = GROUP[xp.__name__]

    def __len__(self):
        n, b = len(self.labels), self.batch_size
        return n // b if self.train else -(-n // b)

    def epoch(self, epoch, start=0):
        """Yield the batches of `epoch`, from step `start` on."""
        n, b, xp = len(self.labels), self.batch_size, self.xp
        if not self.train:
            for step in range(start, len(self)):
                yield self.augment(slice(step * b, (step + 1) * b))  # in order: a view, no gather
            return
        # the epoch's order and every draw of its batches, made on the host now (each batch's from
        # its own (seed, epoch, step) generator, as batch() makes them) and moved to the device in
        # one copy each: a group of batches then waits on no host-to-device copy but its policy's
        # indices and values
        order = xp.asarray(np.random.default_rng([self.seed, epoch]).permutation(n))[start * b:]
        steps = range(start, len(self))
        plans, shifts, holes = zip(*[self.draws(b, np.random.default_rng([self.seed, epoch, step]))
                                     for step in steps]) if len(steps) else ((), (), ())
        shifts = xp.asarray(np.concatenate(shifts, axis=1)) if shifts and shifts[0] is not None else None
        holes = xp.asarray(np.concatenate(holes, axis=1)) if holes and holes[0] is not None else None
        # self.group batches are augmented together, as one batch (GROUP says why); every image is
        # augmented on its own, so each batch is still what batch() makes
        for first in range(0, len(steps), self.group):
            count = min(self.group, len(steps) - first)
            group = slice(first * b, (first + count) * b)  # the group's images, in order and in the draws
            x, y = self.augment(order[group],
                                None if plans[0] is None else faa.join(plans[first:first + count], b),
                                None if shifts is None else shifts[:, group],
                                None if holes is None else holes[:, group])
            for i in range(count):
                yield x[i * b:(i + 1) * b], y[i * b:(i + 1) * b]

    def draws(self, n, rng):
        """Every random number a training batch of n images needs, from rng, on the host, in the
        reference's order: the policy's plan, the crop + flip draws, Cutout's centres (None
        for what is switched off)."""
        h, w = self.images.shape[1:3]
        plan = faa.plan(self.policy, n, rng, (h, w)) if self.policy is not None else None
        shifts = crop_flip_draws(n, rng, crop=self.crop, flip=self.flip) if self.crop or self.flip else None
        holes = cutout_draws(n, h, w, rng) if self.cutout else None
        return plan, shifts, holes

    def batch(self, idx, rng=None):
        """One batch of the images at idx: augmented with draws from rng in training, else as they are."""
        return self.augment(idx, *self.draws(len(idx), rng)) if rng is not None else self.augment(idx)

    def augment(self, idx, plan=None, shifts=None, holes=None):
        # the reference order: FAA policy, crop, flip, normalise, Cutout
        x = self.images[idx]  # uint8 (B, H, W, C)
        if plan is not None:
            x = faa.apply_plan(x, plan)
        if shifts is not None:
            x = crop_flip(x, shifts)
        x = (x.astype(np.float32) - self.mean) * self.inv_std
        x = self.xp.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (B, C, H, W)
        if holes is not None:
            x = cutout(x, holes, self.cutout)  # after normalising, as kakaobrain: the hole is the mean
        if self.permutation is not None:
            x = permute_pixels(x, self.permutation)
        return x, self.labels[idx]


def show_augment(loader, path, count=32, seed=0):
    """A PNG of `count` training images as the net sees them (policy, crop, flip, Cutout), 3x."""
    from PIL import Image
    x, _ = loader.batch(np.arange(count), np.random.default_rng([seed, 0, 0]))
    x = (x.transpose(0, 2, 3, 1) / loader.inv_std + loader.mean).clip(0, 255).round().astype(np.uint8)  # undo normalising
    x = to_numpy(x)
    rows = count // 8
    grid = x[:rows * 8].reshape(rows, 8, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 32, 8 * 32, 3)
    Image.fromarray(grid).resize((8 * 96, rows * 96), Image.NEAREST).save(path)


def bench(x_train, y_train, spec, batch_size):
    """Seconds for one training epoch per augmentation, and each FAA op on one batch."""
    mean, std = channel_stats(x_train)
    for name, kwargs in [('none', dict(crop=False, flip=False)), ('basic: crop + flip', {}),
                         ('faa: policy, crop, flip, Cutout', dict(policy=spec['policy'], cutout=spec['cutout']))]:
        loader = Loader(x_train, y_train, batch_size, np, mean, std, train=True, **kwargs)
        t0 = time.perf_counter()
        batches = sum(1 for _ in loader.epoch(0))
        seconds = time.perf_counter() - t0
        print(f'one epoch, {batches} batches of {batch_size}, {name}: {seconds:.2f} s '
              f'({batches * batch_size / seconds:,.0f} images/s, numpy)')
    x, rng = x_train[:batch_size], np.random.default_rng(0)
    print(f'each Fast AutoAugment op on {len(x)} images (ms, median of 5):')
    for name in faa.OPS:
        lo, hi = faa.RANGES[name]
        value = rng.uniform(lo, hi, len(x))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            faa.faa_op(name, x, value, rng)
            times.append(time.perf_counter() - t0)
        print(f'  {name:12s} {1000 * np.median(times):6.2f}')


def main(argv=None):
    parser = argparse.ArgumentParser(description='Check a dataset, time its training data path, or show its augmentation.')
    parser.add_argument('--dataset', default='cifar10', choices=list(DATASETS), help='dataset (default: cifar10)')
    parser.add_argument('--data-dir', default=DATA_DIR, help=f'where datasets live (default: {DATA_DIR}, or $BLASSO_DATA)')
    parser.add_argument('--batch-size', type=int, default=512, help='batch size (default: 512)')
    parser.add_argument('--bench', action='store_true', help='time decoding, one epoch of batches per augmentation, and each FAA op')
    parser.add_argument('--show-augment', metavar='PNG', help='write 32 training images after the full faa pipeline to PNG')
    args = parser.parse_args(argv)
    try:
        t0 = time.perf_counter()
        x_train, y_train, x_test, y_test = load(args.dataset, args.data_dir)
        decode = time.perf_counter() - t0
    except DataError as e:
        raise SystemExit(f'error: {e}')
    print(f'{args.dataset}: train {x_train.shape} test {x_test.shape}, '
          f'train images per class {np.bincount(y_train).tolist()}; decoded in {decode:.2f} s')
    spec = DATASETS[args.dataset]
    if args.show_augment:
        mean, std = channel_stats(x_train)
        show_augment(Loader(x_train, y_train, 32, np, mean, std, train=True, policy=spec['policy'],
                            cutout=spec['cutout']), args.show_augment)
        print(f'wrote {args.show_augment}: 32 training images after {spec["policy"]}, crop, flip and Cutout {spec["cutout"]}')
    if args.bench:
        bench(x_train, y_train, spec, args.batch_size)


if __name__ == '__main__':
    main()
