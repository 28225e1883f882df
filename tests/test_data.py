"""Datasets from tiny files in the real formats, every failure's message, and augmentation."""
import os
import shutil
import socket
import threading
import urllib.error

import numpy as np
import pytest

import backend
import data
from conftest import HAVE_CIFAR10, NO_CIFAR10, REAL_DATA
from fixtures import make_cifar10, make_cifar100, make_svhn, md5


def leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith('.')]


@pytest.fixture
def cifar10_archive(tmp_path, monkeypatch):
    """A tiny cifar-10-python.tar.gz in tmp_path/src, whose MD5 the loader is told to expect."""
    src = tmp_path / 'src'
    src.mkdir()
    path = make_cifar10(str(src))
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(path))
    return path


def test_cifar10_from_archive_then_from_folder(cifar10_archive, tmp_path, capsys):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    shutil.copy(cifar10_archive, data_dir)
    x, y, xt, yt = data.load('cifar10', str(data_dir))
    assert x.shape == (100, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (100,)
    assert xt.shape == (20, 32, 32, 3) and set(np.unique(y)) <= set(range(10))
    assert 'has 100 images (the canonical release has 50000)' in capsys.readouterr().out
    assert (data_dir / 'cifar-10-batches-py' / 'data_batch_5').exists() and not leftovers(data_dir)
    os.remove(data_dir / 'cifar-10-python.tar.gz')  # the extracted folder alone is enough
    x2, *_ = data.load('cifar10', str(data_dir))
    assert np.array_equal(x, x2)


def test_cifar10_pixel_layout(tmp_path, monkeypatch):
    """Rows hold the R, G then B planes; we return (N, H, W, C)."""
    path = make_cifar10(str(tmp_path))
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(path))
    x, *_ = data.load('cifar10', str(tmp_path))
    from fixtures import learnable_images
    expected, _ = learnable_images(20, 10, 1)
    assert np.array_equal(x[:20], expected)


def test_cifar100_fine_labels(tmp_path, monkeypatch):
    path = make_cifar100(str(tmp_path))
    monkeypatch.setitem(data.DATASETS['cifar100'], 'md5', md5(path))
    x, y, xt, yt = data.load('cifar100', str(tmp_path))
    assert x.shape == (30, 32, 32, 3) and xt.shape == (10, 32, 32, 3)
    assert y.max() > 20  # fine labels (0..99), not the 20 coarse ones


def test_svhn_mat_files(tmp_path, monkeypatch):
    paths = make_svhn(str(tmp_path), extra=5)
    md5s = {os.path.basename(p): md5(p) for p in paths.values()}
    monkeypatch.setitem(data.DATASETS['svhn'], 'md5', md5s)
    x, y, xt, yt = data.load('svhn', str(tmp_path))
    assert x.shape == (25, 32, 32, 3) and xt.shape == (15, 32, 32, 3)
    assert y.min() >= 0 and y.max() <= 9 and 0 in y  # label 10 became digit 0
    x_all, y_all, *_ = data.load('svhn', str(tmp_path), extra=True)
    assert len(x_all) == 30 and np.array_equal(x_all[:25], x)


def test_download_through_the_real_code_path(cifar10_archive, tmp_path, monkeypatch):
    monkeypatch.setitem(data.DATASETS['cifar10'], 'url', 'file://' + os.path.dirname(cifar10_archive) + '/')
    data_dir = tmp_path / 'fresh'
    x, *_ = data.load('cifar10', str(data_dir))
    assert len(x) == 100 and (data_dir / 'cifar-10-python.tar.gz').exists() and not leftovers(data_dir)


def test_no_network(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(data.urllib.request, 'urlopen', refuse)
    with pytest.raises(data.DataError, match='could not download .*cifar-10-python.tar.gz .*no network.*by hand into') as e:
        data.load('cifar10', str(tmp_path))
    assert '\n' not in str(e.value) and os.listdir(tmp_path) == []


def test_stalled_connection_gives_up(tmp_path, monkeypatch):
    """A server that accepts and then says nothing: the download ends after TIMEOUT seconds."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    monkeypatch.setattr(data, 'TIMEOUT', 0.5)
    monkeypatch.setitem(data.DATASETS['cifar10'], 'url', f'http://127.0.0.1:{server.getsockname()[1]}/')
    with pytest.raises(data.DataError, match='could not download'):
        data.load('cifar10', str(tmp_path))
    server.close()
    assert os.listdir(tmp_path) == []


def test_wrong_md5_of_a_download_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / 'src'
    src.mkdir()
    make_cifar10(str(src))  # the canonical MD5 is not this file's
    monkeypatch.setitem(data.DATASETS['cifar10'], 'url', f'file://{src}/')
    data_dir = tmp_path / 'data'
    with pytest.raises(data.DataError, match='wrong MD5'):
        data.load('cifar10', str(data_dir))
    assert os.listdir(data_dir) == []


def test_wrong_md5_of_a_local_archive(tmp_path):
    make_cifar10(str(tmp_path))
    with pytest.raises(data.DataError, match='cifar-10-python.tar.gz has the wrong MD5 .*c58f30108f718f92721af3b95e74349a'):
        data.load('cifar10', str(tmp_path))
    assert not (tmp_path / 'cifar-10-batches-py').exists() and not leftovers(tmp_path)


def test_truncated_archive(tmp_path, monkeypatch):
    path = make_cifar10(str(tmp_path), per_batch=200)
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(path))  # get past the MD5 to the unpacking
    with pytest.raises(data.DataError, match='truncated or corrupt') as e:
        data.load('cifar10', str(tmp_path))
    assert '\n' not in str(e.value)
    assert not (tmp_path / 'cifar-10-batches-py').exists() and not leftovers(tmp_path)


def test_missing_batch(cifar10_archive, tmp_path):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    shutil.copy(cifar10_archive, data_dir)
    data.load('cifar10', str(data_dir))
    os.remove(data_dir / 'cifar-10-batches-py' / 'data_batch_3')
    with pytest.raises(data.DataError, match='data_batch_3 is missing'):
        data.load('cifar10', str(data_dir))


def test_unknown_dataset():
    with pytest.raises(data.DataError, match="unknown dataset 'mnist'"):
        data.load('mnist', 'nowhere')


@pytest.mark.skipif(not HAVE_CIFAR10, reason=NO_CIFAR10)
def test_real_cifar10():
    x, y, xt, yt = data.load('cifar10', REAL_DATA)
    assert x.shape == (50000, 32, 32, 3) and xt.shape == (10000, 32, 32, 3)
    assert np.bincount(y).tolist() == [5000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    mean, std = data.channel_stats(x)
    assert np.allclose(mean, [125.30691805, 122.95039414, 113.86538318])
    assert np.allclose(std, [62.99321928, 62.08870764, 66.70489964])


def test_split_validation():
    x, y = np.arange(100)[:, None], np.arange(100)
    xa, ya, xv, yv = data.split_validation(x, y, 10, seed=1)
    assert len(xa) == 90 and len(xv) == 10 and not set(ya) & set(yv)
    assert np.array_equal(yv, data.split_validation(x, y, 10, seed=1)[3])
    assert not np.array_equal(yv, data.split_validation(x, y, 10, seed=2)[3])
    with pytest.raises(data.DataError, match='val_size'):
        data.split_validation(x, y, 100)


def test_channel_stats():
    x = np.random.default_rng(0).integers(0, 256, (12001, 2, 3, 3), dtype=np.uint8)
    mean, std = data.channel_stats(x)
    assert np.allclose(mean, x.mean(axis=(0, 1, 2))) and np.allclose(std, x.std(axis=(0, 1, 2)))


# ----------------------------------------------------------------------------- augmentation

def images(n=16, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (n, 32, 32, 3), dtype=np.uint8)  # no zeros


def test_crop_shifts_by_at_most_four(xp):
    x = images()
    out = data.crop_flip(xp.asarray(x), data.crop_flip_draws(len(x), np.random.default_rng(0), flip=False))
    out = out.get() if hasattr(out, 'get') else out
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(out[i], padded[i, dy:dy + 32, dx:dx + 32])]
        assert matches, f'image {i} is not a shift of the original by at most 4 pixels'


def test_flip_twice_is_identity():
    x = images()
    draws = data.crop_flip_draws(len(x), np.random.default_rng(3), crop=False)
    once = data.crop_flip(x, draws)
    twice = data.crop_flip(once, draws)
    assert np.array_equal(twice, x)
    flipped = [i for i in range(len(x)) if not np.array_equal(once[i], x[i])]
    assert 0 < len(flipped) < len(x)
    assert all(np.array_equal(once[i], x[i, :, ::-1]) for i in flipped)


def test_cutout_zeroes_one_clipped_square():
    x = np.ones((200, 3, 32, 32), np.float32)
    out = data.cutout(x, data.cutout_draws(len(x), 32, 32, np.random.default_rng(0)), 16)
    for img in out:
        holes = np.argwhere(img[0] == 0)
        assert np.all(img == img[0]), 'every channel has the same hole'
        (y0, x0), (y1, x1) = holes.min(0), holes.max(0) + 1
        assert len(holes) == (y1 - y0) * (x1 - x0), 'the hole is one rectangle'
        assert y1 - y0 <= 16 and x1 - x0 <= 16
        assert (y1 - y0 == 16 or y0 == 0 or y1 == 32) and (x1 - x0 == 16 or x0 == 0 or x1 == 32)
    assert sum(np.count_nonzero(img[0] == 0) == 256 for img in out) > 50  # many are unclipped


def test_pixel_permutation():
    perm = data.pixel_permutation(5)
    assert np.array_equal(np.sort(perm), np.arange(1024))
    assert np.array_equal(perm, data.pixel_permutation(5)) and not np.array_equal(perm, np.arange(1024))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    permuted = data.permute_pixels(x, perm)
    assert np.array_equal(data.permute_pixels(permuted, np.argsort(perm)), x)
    assert np.array_equal(permuted[:, :, 0, 0], x[:, :, perm[0] // 32, perm[0] % 32])


def make_loader(train=True, **kwargs):
    x, y = images(50), np.arange(50) % 10
    return data.Loader(x, y, 16, np, mean=[100, 110, 120], std=[50, 60, 70], train=train, cutout=8, **kwargs)


def test_loader_batches_and_normalisation():
    train, test = make_loader(True), make_loader(False)
    assert len(train) == 3 and len(test) == 4  # train drops the last partial batch, eval keeps it
    batches = list(test.epoch(0))
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (images(50)[:16].transpose(0, 3, 1, 2) - np.array([100, 110, 120])[:, None, None]) \
        / np.array([50, 60, 70])[:, None, None]
    assert np.allclose(x, expected, atol=1e-5) and np.array_equal(y, np.arange(16) % 10)


def test_same_seed_same_batches_and_resume():
    a, b, c = make_loader(seed=1), make_loader(seed=1), make_loader(seed=2)
    first = [x for x, _ in a.epoch(0)]
    assert all(np.array_equal(p, q) for p, q in zip(first, (x for x, _ in b.epoch(0))))
    assert not np.array_equal(first[0], next(c.epoch(0))[0])
    assert not np.array_equal(first[0], next(a.epoch(1))[0])  # reshuffled each epoch
    resumed = [x for x, _ in a.epoch(0, start=1)]
    assert all(np.array_equal(p, q) for p, q in zip(first[1:], resumed)) and len(resumed) == 2


def test_an_epoch_is_its_batches_drawn_one_by_one(xp):
    """epoch() draws the whole epoch at once, moves the draws to the device in one copy and
    augments its batches in groups; each batch is still the one batch() makes from its own
    (seed, epoch, step) generator, so a run resumed at any step sees the same batches. Groups of 5
    batches of 4, 12 an epoch: whole groups and a part of one; resumed runs' groups start
    elsewhere, and a run resumed at its epoch's end gets no batch. Batches of 16: one group."""
    x, y = images(50), np.arange(50) % 10
    for kwargs in (dict(policy='fa_reduced_cifar10', cutout=16), dict(), dict(crop=False, flip=False), dict(flip=False)):
        for batch_size, start in ((16, 0), (16, 2), (4, 0), (4, 3), (4, 12)):
            loader = data.Loader(x, y, batch_size, xp, mean=[100, 110, 120], std=[50, 60, 70], train=True, seed=4,
                                 **kwargs)
            loader.group = 5
            order = np.random.default_rng([4, 5]).permutation(50)
            batches = list(loader.epoch(5, start))
            assert len(batches) == len(loader) - start
            for step, (batch, labels) in enumerate(batches, start=start):
                idx = order[step * batch_size:(step + 1) * batch_size]
                want, want_labels = loader.batch(xp.asarray(idx), np.random.default_rng([4, 5, step]))
                assert bool((batch == want).all()) and bool((labels == want_labels).all()), (kwargs, batch_size, step)
                assert np.array_equal(backend.to_numpy(labels), y[idx])


def test_permutation_same_for_train_and_test():
    perm = data.pixel_permutation(0)
    train = make_loader(True, permutation=perm, crop=False, flip=False)
    train.cutout = 0
    test = make_loader(False, permutation=perm)
    idx = np.arange(16)
    assert np.array_equal(train.batch(idx, np.random.default_rng(0))[0], test.batch(idx)[0])
    plain = make_loader(False).batch(idx)[0]  # and the pixels did move, the same way as permute_pixels moves them
    assert np.array_equal(test.batch(idx)[0], data.permute_pixels(plain, perm))
    assert np.array_equal(next(test.epoch(0))[0], data.permute_pixels(plain, perm))


def test_a_training_loader_with_nothing_switched_on_gives_the_normalised_images():
    """No crop, no flip, Cutout and permutation left at their defaults: each batch is its images,
    normalised, untouched (a default that switched Cutout on would zero a square)."""
    x, y = images(50), np.arange(50) % 10
    loader = data.Loader(x, y, 16, np, mean=[100, 110, 120], std=[50, 60, 70], train=True, seed=2, crop=False, flip=False)
    order = np.random.default_rng([2, 0]).permutation(50)
    for step, (batch, labels) in enumerate(loader.epoch(0)):
        idx = order[step * 16:(step + 1) * 16]
        want = (x[idx].transpose(0, 3, 1, 2) - np.array([100, 110, 120])[:, None, None]) / np.array([50, 60, 70])[:, None, None]
        assert np.allclose(batch, want, atol=1e-5) and np.array_equal(labels, y[idx])


def test_an_evaluation_loader_keeps_every_image_once():
    """Evaluation batches cover the split in order, the last one partial, and no empty batch
    follows when the split is a whole number of batches."""
    for n in (48, 50):
        x, y = images(n), np.arange(n) % 10
        loader = data.Loader(x, y, 16, np, mean=[0, 0, 0], std=[1, 1, 1], train=False)
        sizes = [len(labels) for _, labels in loader.epoch(0)]
        assert len(loader) == len(sizes) and sizes == [16] * (n // 16) + ([n % 16] if n % 16 else [])


def test_a_training_loader_cuts_one_square_out_of_every_image():
    """With Cutout on (and nothing else), every image of every batch has a zeroed square (the
    mean, after normalising) of at most size x size pixels, on every channel."""
    x, y = np.full((64, 32, 32, 3), 200, np.uint8), np.arange(64) % 10
    loader = data.Loader(x, y, 16, np, mean=[100] * 3, std=[50] * 3, train=True, crop=False, flip=False, cutout=8)
    for batch, _ in loader.epoch(0):
        holes = (batch == 0).reshape(len(batch), 3, -1).sum(axis=2)
        assert (holes > 0).all() and (holes <= 64).all() and (holes == holes[:, :1]).all()
        assert np.isin(batch, (0.0, 2.0)).all()


def test_an_epoch_resumed_at_its_end_has_no_batches():
    """A run interrupted after an epoch's last step resumes at step len(loader): nothing is left."""
    for loader in (make_loader(True), make_loader(True, crop=False, flip=False), make_loader(False)):
        assert list(loader.epoch(3, start=len(loader))) == []
        assert len(list(loader.epoch(3, start=len(loader) - 1))) == 1


def test_cutout_centres_cover_the_whole_image():
    """The centre of Cutout's square is uniform over the pixels: rows and columns 0..H-1 and
    0..W-1, borders included, never outside."""
    cy, cx = data.cutout_draws(20000, 24, 32, np.random.default_rng(1))
    assert set(cy.tolist()) == set(range(24)) and set(cx.tolist()) == set(range(32))


def test_loader_on_cupy_equals_numpy(xp):
    """The whole training data path (policy, crop, flip, normalise, Cutout, permutation) on the
    GPU gives NumPy's batches: every draw is made on the host."""
    if xp is np:
        pytest.skip('compares CuPy with NumPy')
    x, y = images(50), np.arange(50) % 10
    kwargs = dict(mean=[100, 110, 120], std=[50, 60, 70], train=True, policy='fa_reduced_cifar10', cutout=16,
                  permutation=data.pixel_permutation(3))
    on_cpu, on_gpu = data.Loader(x, y, 16, np, **kwargs), data.Loader(x, y, 16, xp, **kwargs)
    for (a, la), (b, lb) in zip(on_cpu.epoch(2), on_gpu.epoch(2)):
        assert np.allclose(xp.asnumpy(b), a, atol=1e-6) and np.array_equal(xp.asnumpy(lb), la)


@pytest.mark.parametrize('crop, flip', [(True, True), (True, False), (False, True)])
def test_crops_and_flips_vary_and_cover_their_range(crop, flip):
    """Through the Loader, as training sees them: a marker pixel at (10, 5) lands at row
    14 - dy and, unflipped, column 9 - dx, flipped 22 + dx. Over two epochs every offset 0..8
    appears in both directions, about half the images are flipped, and the draws differ from
    batch to batch and from epoch to epoch; with the crop off, every offset is 4 (no shift),
    with the flip off, nothing is flipped."""
    images = np.zeros((1000, 32, 32, 3), np.uint8)
    images[:, 10, 5, 0] = 255
    loader = data.Loader(images, np.zeros(1000, np.int64), 250, np, np.zeros(3), np.ones(3), train=True, seed=3,
                         crop=crop, flip=flip)
    draws = {}
    for epoch in (0, 1):
        for step, (x, _) in enumerate(loader.epoch(epoch)):
            where = x[:, 0].reshape(len(x), -1).argmax(axis=1)
            row, col = where // 32, where % 32
            flipped = col >= 16
            draws[epoch, step] = (14 - row, np.where(flipped, col - 22, 9 - col), flipped)
    dy, dx, flipped = (np.concatenate([d[i] for d in draws.values()]) for i in range(3))
    offsets = set(range(9)) if crop else {4}
    assert set(dy.tolist()) == offsets and set(dx.tolist()) == offsets, (set(dy.tolist()), set(dx.tolist()))
    assert 0.45 < flipped.mean() < 0.55 if flip else not flipped.any()
    for other in ((0, 1), (1, 0)):
        assert not all(np.array_equal(a, b) for a, b in zip(draws[0, 0], draws[other])), other


# ----------------------------------------------------------------------------- NLGP

def torus_lag_covariance(fields, dy, dx):
    """E[x(p) x(p + (dy, dx))] over every pixel p of every field (stationary, periodic)."""
    return float(np.mean(fields * np.roll(fields, (-dy, -dx), axis=(1, 2))))


@pytest.mark.parametrize('gain', [0.01, 1.0, 3.0, 30.0])
def test_nlgp_marginal_is_erf_of_a_gaussian(gain):
    """Unit variance at every gain, and the marginal's CDF: P(x <= t) = Phi(sqrt(2) erfinv(t Z) / g)."""
    from scipy.special import erfinv
    from scipy.stats import norm
    fields = data.nlgp_fields(600, 2.0, gain, rng=np.random.default_rng(1))
    assert abs(fields.var() - 1) < 0.03 and abs(fields.mean()) < 0.03
    z = np.sqrt(2 / np.pi * np.arcsin(gain ** 2 / (1 + gain ** 2)))
    for t in (-1.5, -0.5, 0.0, 0.3, 0.9):
        expected = norm.cdf(np.sqrt(2) * erfinv(np.clip(t * z, -1, 1)) / gain)
        assert abs(np.mean(fields <= t) - expected) < 0.02, (gain, t)


def test_nlgp_goes_from_gaussian_to_binary():
    kurtosis = lambda f: float(np.mean(f ** 4) / np.mean(f ** 2) ** 2)  # noqa: E731 Gaussian 3, +-1 only 1
    assert abs(kurtosis(data.nlgp_fields(400, 2.0, 0.0)) - 3) < 0.1
    assert abs(kurtosis(data.nlgp_fields(400, 2.0, 0.01)) - 3) < 0.1
    binary = data.nlgp_fields(400, 2.0, 100.0)
    assert kurtosis(binary) < 1.05 and np.mean(np.abs(np.abs(binary) - 1) < 0.1) > 0.95


@pytest.mark.parametrize('gaussian', [False, True], ids=['nlgp', 'gaussian twin'])
@pytest.mark.parametrize('gain', [0.01, 3.0])
def test_nlgp_covariance_at_small_lags(gain, gaussian):
    """The field's covariance at lags up to 2 pixels against the arcsine law, for the NLGP and for
    its Gaussian twin alike; at gain 0.01 both are the Gaussian field's exp(-d^2 / xi^2)."""
    xi = 2.0
    fields = data.nlgp_fields(1500, xi, gain, gaussian=gaussian, rng=np.random.default_rng(2))
    target = data.nlgp_covariance(xi, gain)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 1)):
        assert abs(torus_lag_covariance(fields, dy, dx) - target[dy, dx]) < 0.02, (dy, dx)
    if gain < 0.1:
        assert np.allclose(target[0, :3], np.exp(-np.arange(3) ** 2 / xi ** 2), atol=1e-4)
    else:  # the nonlinearity lowers the correlation at every lag but 0
        assert target[0, 0] == pytest.approx(1) and target[0, 1] < np.exp(-1 / xi ** 2) - 0.01


def test_the_gaussian_twin_is_gaussian():
    twin = data.nlgp_fields(600, 2.0, 30.0, gaussian=True, rng=np.random.default_rng(3))
    assert abs(np.mean(twin ** 4) / np.mean(twin ** 2) ** 2 - 3) < 0.1


def test_nlgp_images_are_seeded_balanced_grey_uint8():
    x, y = data.nlgp_images(200, (1.0, 3.0), 3.0, seed=5)
    again, y_again = data.nlgp_images(200, (1.0, 3.0), 3.0, seed=5)
    other, _ = data.nlgp_images(200, (1.0, 3.0), 3.0, seed=6)
    assert x.dtype == np.uint8 and x.shape == (200, 32, 32, 3) and np.array_equal(x, again) and np.array_equal(y, y_again)
    assert not np.array_equal(x, other) and np.bincount(y).tolist() == [100, 100]
    assert np.array_equal(x[..., 0], x[..., 2])  # one field, in grey
    values = (x[..., 0].astype(np.float64) - 128) / 32
    assert abs(values.std() - 1) < 0.05
    # the classes differ in correlation length: neighbouring pixels agree more in class 1 (xi 3)
    lag1 = [torus_lag_covariance(values[y == label], 0, 1) for label in (0, 1)]
    assert lag1[0] < 0.6 < lag1[1]


def test_load_nlgp_makes_both_splits():
    x_train, y_train, x_test, y_test = data.load('nlgp-gaussian', xi=(1.0, 2.0), gain=3.0)
    assert (len(x_train), len(x_test)) == data.DATASETS['nlgp-gaussian']['sizes']
    assert not np.array_equal(x_train[:100], x_test[:100])
    assert set(np.unique(y_train)) == {0, 1}
