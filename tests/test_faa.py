"""Fast AutoAugment: every op against Pillow pixel for pixel, the policy's draws against its
probabilities, and the Loader's faa pipeline."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

import backend
import data
import faa
from conftest import HAVE_CIFAR10, NO_CIFAR10, REAL_DATA
from fixtures import learnable_images


def reference(name, image, v, centre):
    """kakaobrain/fast-autoaugment's augmentations.py, one PIL image at a time; Cutout's centre
    is passed in (the reference draws it from numpy's global generator)."""
    img = Image.fromarray(image)
    w, h = img.size
    if name == 'ShearX':
        return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0))
    if name == 'ShearY':
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0))
    if name == 'TranslateX':
        return img.transform(img.size, Image.AFFINE, (1, 0, v * w, 0, 1, 0))
    if name == 'TranslateY':
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v * h))
    if name == 'Rotate':
        return img.rotate(v)
    if name in ('AutoContrast', 'Invert', 'Equalize'):
        return getattr(ImageOps, name.lower())(img)
    if name == 'Solarize':
        return ImageOps.solarize(img, v)
    if name == 'Posterize':
        return ImageOps.posterize(img, int(v))
    if name in ('Contrast', 'Color', 'Brightness', 'Sharpness'):
        return getattr(ImageEnhance, name)(img).enhance(v)
    assert name == 'Cutout'
    if v <= 0:
        return img
    v = v * w
    x0, y0 = int(max(0, centre[0] - v / 2.)), int(max(0, centre[1] - v / 2.))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), (125, 123, 114))
    return img


def odd_images():
    """Images that hit the ops' special cases: constant, two-valued, one flat channel, black."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    x[0], x[1] = 77, 0
    x[2] = rng.integers(0, 2, (32, 32, 3)) * 255
    x[3, :, :, 0] = 3
    x[4] = rng.integers(100, 103, (32, 32, 3))  # a narrow histogram
    return x


def check_against_pillow(images, seed):
    rng = np.random.default_rng(seed)
    for name in faa.OPS:
        lo, hi = faa.RANGES[name]
        values = np.concatenate([np.linspace(lo, hi, 9), rng.uniform(lo, hi, len(images) - 9)])  # both ends
        got = faa.faa_op(name, images, values, np.random.default_rng(seed))
        centres = np.random.default_rng(seed)  # the centres Cutout drew: x for every image, then y
        cx, cy = 32 - 31 * centres.random(len(images)), 32 - 31 * centres.random(len(images))
        want = np.stack([np.asarray(reference(name, images[i], values[i], (cx[i], cy[i]))) for i in range(len(images))])
        differing = (got != want).any(axis=3)
        assert got.dtype == np.uint8 and got.shape == images.shape
        assert not differing.any(), (f'{name}: {differing.sum()} pixels of {differing.any(axis=(1, 2)).sum()} '
                                     f'images differ from Pillow, first at values {values[differing.any(axis=(1, 2))][:3]}')


def test_every_op_equals_pillow_on_made_images():
    images, _ = learnable_images(92, 10, seed=3)
    check_against_pillow(np.concatenate([odd_images(), images]), seed=0)


@pytest.mark.skipif(not HAVE_CIFAR10, reason=NO_CIFAR10)
def test_every_op_equals_pillow_on_real_cifar10():
    with open(os.path.join(REAL_DATA, 'cifar-10-batches-py', 'test_batch'), 'rb') as f:
        rows = pickle.load(f, encoding='bytes')[b'data'][:600]
    check_against_pillow(np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), seed=1)


def test_cutout_side_and_colour():
    x = np.zeros((500, 32, 32, 3), np.uint8)
    out = faa.faa_op('Cutout', x, np.full(500, 0.2), np.random.default_rng(0))  # 6.4 px: 7 px unclipped
    hole = (out == np.array(faa.CUTOUT_FILL, np.uint8)).all(axis=3)
    rows, cols = hole.any(axis=2).sum(axis=1), hole.any(axis=1).sum(axis=1)
    assert rows.max() == cols.max() == 7 and rows.min() >= 1 and (hole.sum(axis=(1, 2)) == rows * cols).all()
    assert (faa.faa_op('Cutout', x, np.zeros(500), np.random.default_rng(0)) == 0).all()  # level 0: no hole


@pytest.mark.parametrize('name', ['ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate'])
def test_signed_ops_at_level_one_half_are_the_identity(name):
    images, _ = learnable_images(20, 10, seed=5)
    lo, hi = faa.RANGES[name]
    value = np.full(20, 0.5 * (hi - lo) + lo)
    assert np.array_equal(faa.faa_op(name, images, value), images)
    assert not np.array_equal(faa.faa_op(name, images, np.full(20, hi)), images)


def test_values_out_of_range_and_unknown_ops_are_value_errors():
    x = np.zeros((2, 32, 32, 3), np.uint8)
    for name, bad in (('ShearX', 0.31), ('Rotate', -31), ('Solarize', 257), ('Posterize', 3.9), ('Color', 0.0),
                      ('Cutout', 0.25), ('TranslateY', -0.5)):
        with pytest.raises(ValueError, match=name):
            faa.faa_op(name, x, np.array([0.0 if name != 'Color' else 1.0, bad]), np.random.default_rng(0))
    with pytest.raises(ValueError, match='unknown'):
        faa.faa_op('Blur', x, np.zeros(2))
    with pytest.raises(ValueError, match='uint8'):
        faa.faa_op('Invert', x.astype(np.float32))
    with pytest.raises(ValueError, match='2 values'):
        faa.faa_op('Brightness', x, np.ones(3))
    assert data.faa_op is faa.faa_op  # the public entry point


def test_draws_follow_the_policy():
    policy = faa.policy_arrays(faa.POLICIES['fa_reduced_cifar10'])
    ops, probs, levels = policy
    n = 200_000
    chosen, op, value, applied = faa.draw(policy, n, np.random.default_rng(0))
    counts = np.bincount(chosen, minlength=len(ops))
    expected = n / len(ops)  # 405.7; binomial sd 20: a draw of 1 in 2 sub-policies would leave half at 0
    assert counts.min() > expected - 6 * 20 and counts.max() < expected + 6 * 20, (counts.min(), counts.max())
    assert np.array_equal(op, ops[chosen])
    for slot in range(2):  # each op fires with its probability: sum of p over the draws, 6 sd
        p = probs[chosen, slot]
        assert abs(applied[:, slot].sum() - p.sum()) < 6 * np.sqrt((p * (1 - p)).sum())
        for k, name in enumerate(faa.OPS):  # and per op name
            mine = op[:, slot] == k
            pk = p[mine]
            assert abs(applied[mine, slot].sum() - pk.sum()) < 6 * np.sqrt((pk * (1 - pk)).sum()) + 1, name
    lo, hi = np.array([faa.RANGES[name] for name in faa.OPS]).T
    magnitude = levels[chosen] * (hi - lo)[op] + lo[op]
    signed = np.isin(op, [faa.OPS.index(name) for name in faa.SIGNED])
    assert np.allclose(value[~signed], magnitude[~signed], rtol=0, atol=1e-12)
    negated = value[signed] != magnitude[signed]
    assert np.allclose(value[signed][negated], -magnitude[signed][negated])
    assert abs(negated.mean() - 0.5) < 0.01
    assert abs((~applied.any(axis=1)).mean() - 0.24) < 0.01  # the spec: about 24% of images get no op


def test_apply_policy_applies_each_op_with_its_probability():
    policy = faa.policy_arrays([[['Invert', 0.3, 0.5], ['Invert', 0.0, 0.5]], [['Invert', 0.9, 0.5], ['Invert', 0.0, 0.5]]])
    x = np.zeros((4000, 32, 32, 3), np.uint8)
    chosen, *_ = faa.draw(policy, len(x), np.random.default_rng(1))
    inverted = faa.apply_policy(x, policy, np.random.default_rng(1))[:, 0, 0, 0] == 255
    assert (x == 0).all()  # a copy, not in place
    for sub, p in ((0, 0.3), (1, 0.9)):
        share = inverted[chosen == sub].mean()
        assert abs(share - p) < 0.04, (sub, share)
    two_ops = faa.policy_arrays([[['Posterize', 1.0, 0.0], ['Invert', 1.0, 0.5]]])  # chained: invert(posterize(x))
    images, _ = learnable_images(10, 10, seed=2)
    assert np.array_equal(faa.apply_policy(images, two_ops, np.random.default_rng(0)), 255 - (images & 0xF0))


def test_loader_faa_pipeline_is_seeded_and_basic_is_unchanged():
    x, y = learnable_images(64, 10, seed=4)
    loader = data.Loader(x, y, 16, np, mean=[100, 110, 120], std=[50, 60, 70], train=True,
                         policy='fa_reduced_cifar10', cutout=16)
    first, again = list(loader.epoch(3)), list(loader.epoch(3, start=2))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first[2:], again))  # resumable at any step
    assert not np.array_equal(first[0][0], first[1][0])
    basic = data.Loader(x, y, 16, np, mean=[100, 110, 120], std=[50, 60, 70], train=True)
    idx, rng = np.arange(16), np.random.default_rng([0, 3, 0])
    by_hand = data.crop_flip(x[idx], data.crop_flip_draws(len(idx), rng))
    want = ((by_hand.astype(np.float32) - basic.mean) * basic.inv_std).transpose(0, 3, 1, 2)
    assert np.array_equal(basic.batch(idx, np.random.default_rng([0, 3, 0]))[0], want)  # no policy: the draws of old


def test_faa_ops_on_cupy_equal_numpy(xp):
    if xp is np:
        pytest.skip('compares CuPy with NumPy')
    images = np.concatenate([odd_images(), learnable_images(56, 10, seed=6)[0]])
    for name in faa.OPS:
        lo, hi = faa.RANGES[name]
        values = np.random.default_rng(0).uniform(lo, hi, len(images))
        want = faa.faa_op(name, images, values, np.random.default_rng(0))
        got = faa.faa_op(name, xp.asarray(images), values, np.random.default_rng(0))
        assert np.array_equal(xp.asnumpy(got), want), name
    policy = faa.policy_arrays(faa.POLICIES['fa_reduced_svhn'])
    assert np.array_equal(xp.asnumpy(faa.apply_policy(xp.asarray(images), policy, np.random.default_rng(2))),
                          faa.apply_policy(images, policy, np.random.default_rng(2)))


def test_show_augment_writes_a_png(tmp_path):
    x, y = learnable_images(40, 10, seed=8)
    loader = data.Loader(x, y, 32, np, mean=[100, 110, 120], std=[50, 60, 70], train=True,
                         policy='fa_reduced_cifar10', cutout=16)
    data.show_augment(loader, str(tmp_path / 'augment.png'))
    assert Image.open(tmp_path / 'augment.png').size == (8 * 96, 4 * 96)


def test_bincount_counts_as_numpy_does(xp):
    values = np.random.default_rng(0).integers(0, 700, 5000).astype(np.int32)
    counts = backend.bincount(xp.asarray(values), 768)
    assert counts.shape == (768,) and np.array_equal(backend.to_numpy(counts), np.bincount(values, minlength=768))


def test_a_training_step_with_faa_reads_nothing_back_on_a_gpu(xp):
    """One training step with the CIFAR-10 policy, Cutout, the S-FC forward and backward and a
    beta-LASSO update, under cupyx.allow_synchronize(False): no device-to-host read. (train.py
    reads the loss and accuracy sums every 10 steps, outside this.)"""
    if xp is np:
        pytest.skip('counts device-to-host reads on CuPy')
    import cupyx
    import blasso
    import models
    images, labels = learnable_images(64, 10, seed=0)
    mean, std = data.channel_stats(images)
    loader = data.Loader(images, labels, 32, xp, mean, std, train=True, policy='fa_reduced_cifar10', cutout=16)
    model = models.to_device(models.build('s_fc', 1), xp)
    groups = blasso.param_groups(model, 2e-5, 5e-6, verbose=False)
    batches = loader.epoch(0)
    next(batches)  # the epoch's draws are made and moved at its start
    with cupyx.allow_synchronize(False):
        x, y = next(batches)
        loss, dlogits = models.softmax_cross_entropy(model.forward(x), y)
        model.backward(dlogits, need_dx=False)
        blasso.blasso_step(groups, 0.1, 50.0)
