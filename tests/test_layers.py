"""Every layer's dx and parameter gradients against centred differences, in float64."""
import numpy as np
import pytest

import models
from helpers import numerical_grad, rel_error

F64 = np.float64


def check_layer(layer, x, tol, need_dx=True):
    """Forward, backward with a random dout, then compare dx and every param's gradient."""
    rng = np.random.default_rng(1)
    out = layer.forward(x, train=True)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    f = lambda: layer.forward(x, train=True)  # noqa: E731
    errors = {'x': rel_error(dx, numerical_grad(f, x, dout))}
    for name, p, g in layer.params():
        analytic = g.copy()  # the numeric check reruns forward, not backward; copy anyway
        errors[name] = rel_error(analytic, numerical_grad(f, p, dout))
    print(f'{layer!r} x {x.shape}: ' + ', '.join(f'd{k} {v:.0e}' for k, v in errors.items()))  # pytest -s
    for name, err in errors.items():
        assert err < tol, f'{layer!r}: d{name} rel error {err:.2e} >= {tol:g} (x {x.shape})'
    return errors


def test_linear():
    rng = np.random.default_rng(0)
    check_layer(models.Linear(7, 5, rng, dtype=F64), rng.standard_normal((4, 7)), 1e-7)
    check_layer(models.Linear(7, 5, rng, bias=False, dtype=F64), rng.standard_normal((4, 7)), 1e-7)


@pytest.mark.parametrize('c_in,c_out,k,stride,pad', [  # stride 1 with pad < k: dx as a convolution
    (3, 4, 3, 1, 1), (3, 4, 3, 2, 1), (2, 5, 3, 1, 0), (2, 5, 3, 2, 0), (3, 2, 5, 2, 2), (2, 3, 3, 1, 3),
    (3, 4, 1, 2, 0), (2, 3, 9, 1, 4), (2, 3, 9, 2, 4), (2, 2, 15, 1, 7), (2, 2, 9, 1, 9)])
def test_conv2d(c_in, c_out, k, stride, pad):
    rng = np.random.default_rng(0)
    layer = models.Conv2d(c_in, c_out, k, stride, pad, rng, dtype=F64)
    check_layer(layer, rng.standard_normal((2, 7, 6, c_in)), 1e-7)  # (N, H, W, C)


# k 1, 3, 9, 15; stride 1, 2, 3; odd and non-square images; padding wider than the image
FFT_CASES = [(3, 4, 1, 1, 0), (3, 4, 1, 2, 0), (3, 4, 3, 1, 1), (3, 4, 3, 2, 1), (2, 3, 9, 1, 4), (2, 3, 9, 2, 4),
             (2, 2, 15, 1, 7), (2, 2, 15, 2, 7), (2, 3, 5, 3, 2), (2, 3, 3, 1, 0), (2, 2, 9, 1, 9)]


@pytest.mark.parametrize('c_in,c_out,k,stride,pad', FFT_CASES)
def test_fft_conv2d(c_in, c_out, k, stride, pad):
    """The FFT path's gradients, and its agreement with im2col's on the same weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 5, c_in))
    check_layer(models.FFTConv2d(c_in, c_out, k, stride, pad, np.random.default_rng(1), dtype=F64), x, 1e-7)
    assert_same_as_im2col(models.FFTConv2d(c_in, c_out, k, stride, pad, np.random.default_rng(1), dtype=F64), x)


def assert_same_as_im2col(layer, x):
    """layer, drawn from np.random.default_rng(1), gives Conv2d's output, dx and dW on x, also
    without dx."""
    plain = models.Conv2d(layer.W.shape[0] // layer.k ** 2, layer.W.shape[1], layer.k, layer.stride, layer.pad,
                          np.random.default_rng(1), dtype=F64)
    out = layer.forward(x)
    assert out.shape == plain.forward(x).shape and np.allclose(out, plain.forward(x), atol=1e-12)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    assert np.allclose(layer.backward(dout), plain.backward(dout), atol=1e-12)
    assert np.allclose(layer.dW, plain.dW, atol=1e-12)
    assert layer.backward(dout, need_dx=False) is None and np.allclose(layer.dW, plain.dW, atol=1e-12)


@pytest.mark.parametrize('tile', [1, 2, 3, 8])
@pytest.mark.parametrize('c_in,c_out,k,stride,pad', FFT_CASES)
def test_band_conv2d(c_in, c_out, k, stride, pad, tile):
    """The bands' gradients, and their agreement with im2col's on the same weights. Tiles of 1 to
    8 columns over outputs 1 to 7 wide: tiles that cover the row exactly, a last tile partly
    past it, and tiles whose windows overlap (span > tile*stride) or leave columns unread."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 5, c_in))
    band = models.BandConv2d(c_in, c_out, k, stride, pad, np.random.default_rng(1), tile=tile, dtype=F64)
    check_layer(band, x, 1e-7)
    assert_same_as_im2col(band, x)


def test_band_conv2d_float32_on_the_nets_shapes():
    """S-CONV's first layer and two of D-CONV's layers (stride 2 and stride 1) at batch 4, float32:
    within float32's rounding of im2col, and float32 out."""
    rng = np.random.default_rng(0)
    for c, f, k, s, p, h, tile in ((3, 8, 9, 2, 4, 32, 8), (8, 16, 3, 2, 1, 32, 4), (16, 16, 3, 1, 1, 16, 4)):
        x = rng.standard_normal((4, h, h, c), dtype=np.float32)
        band = models.BandConv2d(c, f, k, s, p, np.random.default_rng(1), tile=tile)
        plain = models.Conv2d(c, f, k, s, p, np.random.default_rng(1))
        out, ref = band.forward(x), plain.forward(x)
        assert out.dtype == np.float32 and np.abs(out - ref).max() < 1e-5 * np.abs(ref).max()
        dout = rng.standard_normal(out.shape, dtype=np.float32)
        dx, dx_ref = band.backward(dout), plain.backward(dout)
        assert dx.dtype == band.dW.dtype == np.float32 and np.abs(dx - dx_ref).max() < 1e-5 * np.abs(dx_ref).max()
        assert np.abs(band.dW - plain.dW).max() < 1e-5 * np.abs(plain.dW).max()


def test_fft_conv2d_float32():
    """In float32 the FFT's rounding stays at float32's: within 1e-5 of im2col, and float32 out."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 32, 8), dtype=np.float32)
    fft, plain = (cls(8, 8, 9, 1, 4, np.random.default_rng(1)) for cls in (models.FFTConv2d, models.Conv2d))
    out, ref = fft.forward(x), plain.forward(x)
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 1e-5 * np.abs(ref).max()
    dx, dx_ref = fft.backward(np.ones_like(out)), plain.backward(np.ones_like(ref))
    assert dx.dtype == fft.dW.dtype == np.float32 and np.abs(dx - dx_ref).max() < 1e-5 * np.abs(dx_ref).max()
    assert np.abs(fft.dW - plain.dW).max() < 1e-5 * np.abs(plain.dW).max()


def test_fft_size():
    assert [models.fft_size(n) for n in (1, 7, 11, 13, 14, 34, 38, 41)] == [1, 8, 12, 15, 15, 36, 40, 45]


def test_the_rule_picks_by_shape():
    """conv2d's picks, as docs/speed.md tabulates them, and the nets built from them."""
    rng = np.random.default_rng(0)
    pick = lambda *shape, first=False: type(models.conv2d(*shape, rng, first=first)).__name__  # noqa: E731
    assert pick(8, 8, 9, 1, 4, 32) == pick(16, 16, 9, 1, 4, 16) == pick(8, 8, 5, 1, 2, 32) == 'FFTConv2d'
    assert pick(3, 64, 5, 1, 2, 32, first=True) == pick(64, 64, 13, 1, 6, 4) == 'FFTConv2d'  # growth 19.8, 10.6
    assert pick(64, 64, 3, 1, 1, 8) == pick(64, 64, 7, 1, 3, 4) == pick(64, 64, 9, 1, 4, 4) == 'Conv2d'  # 9.0
    assert pick(8, 16, 1, 2, 0, 32) == pick(8, 8, 1, 1, 0, 32) == 'Conv2d'  # 1x1: a band would be all gaps
    assert pick(8, 8, 3, 1, 1, 32) == pick(16, 32, 3, 2, 1, 16) == pick(8, 8, 5, 1, 2, 4) == 'BandConv2d'  # thin
    assert pick(32, 64, 3, 2, 1, 8) == pick(64, 128, 9, 2, 4, 8) == 'BandConv2d'  # strided
    # where the bands skip work the FFT does, the FFT needs a larger growth: strided 20, first 64
    assert pick(8, 16, 9, 2, 4, 32) == pick(8, 16, 13, 2, 6, 16) == 'BandConv2d'  # growth 13.0, 12.0
    assert pick(8, 16, 15, 2, 7, 32) == pick(64, 64, 15, 2, 7, 32) == 'FFTConv2d'  # 25.0
    assert pick(3, 8, 9, 2, 4, 32, first=True) == pick(3, 8, 9, 1, 4, 32, first=True) == 'BandConv2d'  # 13.0, 51.8
    assert pick(3, 8, 15, 1, 7, 32, first=True) == 'FFTConv2d'  # 100
    tiles = {f: models.conv2d(8, f, 3, 1, 1, 32, rng).tile for f in (1, 8, 16, 20, 32)}
    assert tiles == {1: 64, 8: 8, 16: 4, 20: 3, 32: 2}  # 64 // F: products 64 columns wide, or nearly
    assert models.conv2d(64, 128, 3, 2, 1, 8, rng).tile == 1
    kinds = lambda arch, k=3: {type(layer).__name__ for layer in models.leaves(models.build(arch, 8, kernel_size=k).layers)}  # noqa: E731
    assert 'FFTConv2d' not in kinds('s_conv') | kinds('d_conv') | kinds('resnet18')
    assert {'BandConv2d', 'Conv2d'} <= kinds('d_conv') & kinds('resnet18') and 'BandConv2d' in kinds('s_conv')
    assert {'FFTConv2d', 'BandConv2d', 'Conv2d'} <= kinds('resnet18', 9)


@pytest.mark.parametrize('c_in,c_out,k,stride,pad', [
    (3, 4, 3, 1, 1), (3, 4, 3, 2, 1), (2, 5, 3, 1, 0), (2, 5, 3, 2, 0), (3, 2, 5, 2, 2)])
def test_local2d(c_in, c_out, k, stride, pad):
    rng = np.random.default_rng(0)
    layer = models.Local2d(c_in, c_out, k, stride, pad, 7, 6, rng, dtype=F64)
    x = rng.standard_normal((2, 7, 6, c_in))
    out = layer.forward(x)
    assert layer.cols.shape[:3] == (2,) + out.shape[1:3] and out.flags.c_contiguous
    check_layer(layer, x, 1e-7)


@pytest.mark.parametrize('shape', [(6, 5), (4, 5, 4, 3)])  # (N, F) and (N, H, W, F)
def test_batchnorm(shape):
    rng = np.random.default_rng(0)
    layer = models.BatchNorm(shape[-1], dtype=F64)
    layer.gamma[:] = rng.uniform(0.5, 1.5, shape[-1])
    layer.beta[:] = rng.standard_normal(shape[-1])
    check_layer(layer, 3 * rng.standard_normal(shape) + 1, 1e-6)


def test_relu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink, where differences are undefined
    check_layer(models.ReLU(), x, 1e-7)


def test_flatten():
    check_layer(models.Flatten(), np.random.default_rng(0).standard_normal((2, 3, 4, 4)), 1e-7)


def test_channels_last():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    assert models.ChannelsLast().forward(x)[1, 2, 3, 0] == x[1, 0, 2, 3]
    check_layer(models.ChannelsLast(), x, 1e-7)


def test_dropout_gradient_and_scale():
    rng = np.random.default_rng(0)
    layer = models.Dropout(0.3, seed=5)
    x = rng.standard_normal((50, 40))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)

    def f():  # the same mask every call: rewind the call counter the mask seed comes from
        layer.calls[:] = 0
        return layer.forward(x)
    layer.calls[:] = 0
    assert rel_error(dx, numerical_grad(f, x, dout)) < 1e-7
    kept = layer.mask != 0
    assert abs(kept.mean() - 0.7) < 0.05, kept.mean()
    assert np.allclose(out[kept], x[kept] / 0.7) and np.all(out[~kept] == 0)
    assert layer.forward(x, train=False) is x  # identity in evaluation


@pytest.mark.parametrize('c_in,c_out,stride', [(3, 3, 1), (2, 4, 2)], ids=['identity', 'projection'])
def test_residual_block(c_in, c_out, stride):
    """Both shortcuts: the gradients of the two paths add where x splits."""
    rng = np.random.default_rng(0)
    for k in (3, 5):
        block = models.Residual(c_in, c_out, stride, k, 6, rng, dtype=F64)
        assert (block.shortcut is None) == (stride == 1 and c_in == c_out)
        x = rng.standard_normal((3, 6, 6, c_in))
        x[np.abs(x) < 0.05] += 0.1  # inputs away from the ReLU kink
        check_layer(block, x, 1e-6)


def test_global_avg_pool():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    assert np.allclose(models.GlobalAvgPool().forward(x), x.mean(axis=(1, 2)))
    check_layer(models.GlobalAvgPool(), x, 1e-7)


def test_softmax_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    loss, dlogits = models.softmax_cross_entropy(logits, y)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.isclose(loss, -np.log(probs[np.arange(5), y]).mean())
    numeric = numerical_grad(lambda: models.softmax_cross_entropy(logits, y)[0], logits, 1.0)
    assert rel_error(dlogits, numeric) < 1e-7
    # stable for huge logits, where a naive softmax overflows
    big_loss, big_d = models.softmax_cross_entropy(logits * 1e4, y)
    assert np.isfinite(big_loss) and np.all(np.isfinite(big_d))


@pytest.mark.parametrize('shape', [(6, 5), (3, 4, 4, 5)])
def test_batchnorm_tiled_rows_equal_the_textbook_formula(shape):
    """The tiled-row arithmetic against batch norm written on (N*H*W, F) with broadcasting:
    the same outputs and running statistics, in training and evaluation."""
    rng = np.random.default_rng(0)
    x, gamma = rng.standard_normal(shape), rng.uniform(0.5, 1.5, shape[-1])
    bn = models.BatchNorm(shape[-1], dtype=F64)
    bn.gamma[...], bn.beta[...] = gamma, 0.3
    out = bn.forward(x, train=True)
    flat = x.reshape(-1, shape[-1])
    mean, var = flat.mean(axis=0), flat.var(axis=0)
    assert np.allclose(out, (x - mean) / np.sqrt(var + 1e-5) * gamma + 0.3, rtol=1e-12, atol=1e-12)
    n = len(flat)
    assert np.allclose(bn.running_mean, 0.1 * mean) and np.allclose(bn.running_var, 0.9 + 0.1 * var * n / (n - 1))
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5) * gamma + 0.3
    assert np.allclose(bn.forward(x, train=False), expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_running_statistics_and_eval():
    rng = np.random.default_rng(0)
    layer = models.BatchNorm(3, dtype=F64)
    x = 2 * rng.standard_normal((10, 4, 4, 3)) + 5 + np.arange(3)  # (N, H, W, F), features differ
    out = layer.forward(x, train=True)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2), ddof=1)  # PyTorch: unbiased
    assert np.allclose(out, (x - mean) / np.sqrt(x.var(axis=(0, 1, 2)) + 1e-5))
    assert np.allclose(layer.running_mean, 0.1 * mean)
    assert np.allclose(layer.running_var, 0.9 + 0.1 * var)
    out = layer.forward(x, train=False)
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + 1e-5)
    assert np.allclose(out, expected)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    for arch in models.ARCHS:
        model = models.build(arch, 2, image_size=8)
        logits = model.forward(x)
        loss, dlogits = models.softmax_cross_entropy(logits, np.array([1, 2]))
        dx = model.backward(dlogits)
        assert logits.dtype == dx.dtype == loss.dtype == np.float32, arch
        for name, p, g in model.params():
            assert p.dtype == g.dtype == np.float32, (arch, name)


def test_uniform_bits_are_splitmix64():
    """The constants are the published ones: splitmix64 seeded with 0 first returns 0xE220A8397B1DCDAF;
    the top 24 bits of a million draws are uniform, and consecutive keys give unrelated streams."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    assert int(models.splitmix64(np.array([gamma]))[0]) == 0xE220A8397B1DCDAF
    a, b = models.uniform_bits((1000, 1000), 7, np), models.uniform_bits((1000, 1000), 8, np)
    counts = np.bincount((a >> np.uint64(56)).ravel().astype(np.int64), minlength=256)  # top byte
    chi2 = ((counts - 1e6 / 256) ** 2 / (1e6 / 256)).sum()
    assert chi2 < 400, chi2  # 255 degrees of freedom: mean 255, sd 22.6
    top_a, top_b = (a >> np.uint64(40)).ravel().astype(np.float64), (b >> np.uint64(40)).ravel().astype(np.float64)
    assert abs(np.corrcoef(top_a, top_b)[0, 1]) < 0.005
    assert abs(np.corrcoef(top_a[1:], top_b[:-1])[0, 1]) < 0.005  # not one stream shifted by one
    assert np.array_equal(models.uniform_bits((3, 4), 7, np), a.ravel()[:12].reshape(3, 4))  # a counter: prefix-stable


def test_dropout_masks_change_per_call_and_replay_from_the_call_count(xp):
    layer = models.Dropout(0.25, seed=3)
    x = xp.ones((64, 300), np.float32)
    first = layer.forward(x) != 0
    second = layer.forward(x) != 0
    assert not bool((first == second).all()) and abs(float(first.mean()) - 0.75) < 0.01
    layer.calls[:] = 0
    assert bool(((layer.forward(x) != 0) == first).all())
    assert layer.mask.dtype == np.float32


def test_dropout_layers_with_other_seeds_draw_other_masks():
    """Each Dropout layer of a net has its own seed: at the same call, their masks differ, and a
    seed's masks do not reappear under another seed at a later call."""
    x = np.ones((64, 300), np.float32)
    masks = {seed: [models.Dropout(0.5, seed=seed).forward(x) != 0] for seed in (1, 2)}
    layer = models.Dropout(0.5, seed=1)
    later = [layer.forward(x) != 0 for _ in range(3)]
    assert not (masks[1][0] == masks[2][0]).all()
    assert not any((m == masks[2][0]).all() for m in later[1:])


def test_dropout_masks_on_cupy_equal_numpy(xp):
    if xp is np:
        pytest.skip('compares CuPy with NumPy')
    x = np.random.default_rng(0).standard_normal((32, 100)).astype(np.float32)
    on_cpu, on_gpu = models.Dropout(0.4, seed=9), models.Dropout(0.4, seed=9)
    for _ in range(3):
        assert np.array_equal(on_cpu.forward(x), xp.asnumpy(on_gpu.forward(xp.asarray(x))))
