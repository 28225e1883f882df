"""Whole architectures: gradients end to end, the paper's FC ⊃ LOCAL ⊃ CONV hierarchy made
executable, and parameter counts against the formulas of Tables 3/4."""
import numpy as np
import pytest

import backend
import models
from helpers import numerical_grad, rel_error


@pytest.mark.parametrize('arch,k', [(arch, 3) for arch in models.ARCHS] + [('resnet18', 5)])
def test_model_gradients(arch, k):
    """Numeric gradient of the loss w.r.t. every parameter array (40 sampled entries of each, 12 for ResNet18)."""
    rng = np.random.default_rng(0)
    model = models.build(arch, 2, image_size=8, dtype='float64', seed=3, kernel_size=k)
    x = rng.standard_normal((4, 3, 8, 8))
    y = np.array([0, 3, 7, 9])
    loss_of = lambda: models.softmax_cross_entropy(model.forward(x), y)[0]  # noqa: E731
    _, dlogits = models.softmax_cross_entropy(model.forward(x), y)
    dx = model.backward(dlogits)
    errors = {'x': rel_error(dx, numerical_grad(loss_of, x, 1.0, h=1e-6))}
    per_array = 12 if arch == 'resnet18' else 40  # ResNet18 has 62 arrays
    for name, p, g in model.params():
        idx = rng.choice(p.size, min(p.size, per_array), replace=False)
        numeric = numerical_grad(loss_of, p, 1.0, h=1e-6, indices=idx)
        errors[name] = rel_error(g.reshape(-1)[idx], numeric.reshape(-1)[idx])
    print(f'{arch}: worst {max(errors.values()):.1e} over dx and {len(errors) - 1} parameter arrays')  # pytest -s
    for name, err in errors.items():
        assert err < 1e-5, f'{arch}: d{name} rel error {err:.2e}'


def test_need_dx_false_skips_input_gradient_only():
    rng = np.random.default_rng(0)
    model = models.build('s_fc', 2, image_size=8, dtype='float64')
    x = rng.standard_normal((4, 3, 8, 8))
    _, dlogits = models.softmax_cross_entropy(model.forward(x), np.arange(4))
    model.backward(dlogits)
    grads = [g.copy() for _, _, g in model.params()]
    assert model.backward(dlogits, need_dx=False) is None
    for before, (name, _, g) in zip(grads, model.params()):
        assert np.array_equal(before, g), name


def naive_conv(x, W, k, stride, pad):
    """The 4-loop reference, on images (N, C, H, W) and W (k*k*C, F) -> (N, F, H', W'):
    out[n, f, i, j] = sum_{c,a,b} xpad[n, c, i*s + a, j*s + b] W[a, b, c, f]."""
    n, c, h, w = x.shape
    W = W.reshape(k, k, c, -1).transpose(2, 0, 1, 3)  # (C, k, k, F)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h_out, w_out = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.zeros((n, W.shape[-1], h_out, w_out))
    for i in range(h_out):
        for j in range(w_out):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.tensordot(patch, W, axes=([1, 2, 3], [0, 1, 2]))
    return out


@pytest.mark.parametrize('k,stride,pad', [(3, 1, 1), (3, 2, 1), (9, 2, 4), (3, 2, 0)])
def test_conv_equals_naive_loop(k, stride, pad):
    rng = np.random.default_rng(0)
    conv = models.Conv2d(3, 5, k, stride, pad, rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, 10, 9))
    out = conv.forward(x.transpose(0, 2, 3, 1))  # (N, H', W', F)
    assert np.allclose(out.transpose(0, 3, 1, 2), naive_conv(x, conv.W, k, stride, pad))


@pytest.mark.parametrize('k,stride,pad', [(3, 1, 1), (3, 2, 1), (9, 2, 4)])
def test_local_with_tied_filters_equals_conv(k, stride, pad):
    """LOCAL ⊃ CONV: a locally connected layer whose P filters are all equal is the conv."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 10, 10, 2))  # (N, H, W, C)
    conv = models.Conv2d(2, 4, k, stride, pad, rng, dtype=np.float64)
    local = models.Local2d(2, 4, k, stride, pad, 10, 10, rng, dtype=np.float64)
    local.W[:] = conv.W  # broadcast the one filter bank to every position
    out = conv.forward(x)
    assert np.allclose(local.forward(x), out)
    dout = rng.standard_normal(out.shape)
    assert np.allclose(local.backward(dout), conv.backward(dout))
    # weight sharing is a sum: the conv's gradient is the local gradient summed over positions
    assert np.allclose(local.dW.sum(axis=0), conv.dW)


def fc_embedding(conv, c, h, w):
    """The dense (C*H*W, F*H'*W') matrix that computes conv on images flattened as (C, H, W)."""
    k, s, pad = conv.k, conv.stride, conv.pad
    Wc = conv.W.reshape(k, k, c, -1).transpose(2, 0, 1, 3)  # (C, k, k, F)
    f = Wc.shape[-1]
    h_out, w_out = models.conv_out_size(h, k, s, pad), models.conv_out_size(w, k, s, pad)
    dense = np.zeros((c, h, w, f, h_out, w_out))
    for i in range(h_out):
        for j in range(w_out):
            for a in range(k):
                for b in range(k):
                    r, q = i * s + a - pad, j * s + b - pad
                    if 0 <= r < h and 0 <= q < w:
                        dense[:, r, q, :, i, j] = Wc[:, a, b, :]
    return dense.reshape(c * h * w, f * h_out * w_out)


def test_fc_embedding_of_conv_equals_conv():
    """FC ⊃ CONV: a Linear layer holding the conv's scattered weights is the conv."""
    rng = np.random.default_rng(0)
    conv = models.Conv2d(3, 4, 9, 2, 4, rng, dtype=np.float64)
    fc = models.Linear(3 * 12 * 12, 4 * 6 * 6, rng, bias=False, dtype=np.float64)
    fc.W[:] = fc_embedding(conv, 3, 12, 12)
    x = rng.standard_normal((2, 3, 12, 12))
    out = conv.forward(x.transpose(0, 2, 3, 1))  # (N, H', W', F)
    assert np.allclose(fc.forward(x.reshape(2, -1)), out.transpose(0, 3, 1, 2).reshape(2, -1))
    nonzero = np.count_nonzero(fc.W)
    assert nonzero < fc.W.size / 2, 'the embedding of a local layer is sparse'


def weights(model):
    """Weight count without batch-norm parameters and biases."""
    return sum(p.size for _, p, _ in model.params() if p.ndim >= 2)


def extras(model):
    """What the formulas leave out: batch-norm gamma and beta, and the last layer's bias."""
    return sum(p.size for _, p, _ in model.params() if p.ndim < 2)


S, C = 32, 10


@pytest.mark.parametrize('alpha', [1, 3])
def test_parameter_counts_match_the_formulas(alpha):
    a = alpha
    formulas = {  # paper Tables 3/4, exact per-layer sums
        's_conv': 6 * S**2 * a**2 + (243 + 24 * C) * a,
        's_local': 6 * S**2 * a**2 + (243 * S**2 // 4 + 24 * C) * a,
        's_fc': 6 * S**2 * a**2 + (3 * S**4 // 4 + 24 * C) * a,
        'd_conv': 2286 * a**2 + 4 * S**2 * a**2 + (27 + 64 * C) * a,
        'd_fc': (S**4 - S**4 // 128 + 4 * S**2) * a**2 + (3 * S**4 + 64 * C) * a,
        'd_local': 49 * S**2 * a**2 + (27 * S**2 + 64 * C) * a,
    }
    for arch, count in formulas.items():
        model = models.build(arch, alpha)
        assert weights(model) == count, (arch, weights(model), count)
        assert model.num_params() == count + extras(model)
    # the paper's rounded d-conv and d-fc formulas are within 1% of the exact sums at alpha = 15
    d_conv_paper = (9 * 2**8 + 4 * S**2) * 15**2 + (27 + 64 * C) * 15
    assert abs(weights(models.build('d_conv', 15)) - d_conv_paper) / d_conv_paper < 0.01


def test_paper_scale_counts_without_building():
    """At the paper's alpha = 150 (Table 1): 138.3M, 147.6M and 256.2M weights for S-CONV, S-LOCAL and
    S-FC. Every count is quadratic in alpha, so three small nets give it exactly at 150."""
    def weights_at(arch, alpha):
        counts = [weights(models.build(arch, a)) for a in (1, 2, 3)]
        return round(np.polyval(np.polyfit([1, 2, 3], counts, 2), alpha))
    assert weights_at('s_fc', 150) == models.s_fc_num_weights(150) == 256_240_800
    assert round(weights_at('s_conv', 150), -5) == 138_300_000
    assert round(weights_at('s_local', 150), -5) == 147_600_000


@pytest.mark.parametrize('alpha', [1, 2])
def test_multiply_adds_per_image_by_hand(alpha):
    """macs_per_image against counts written out from each architecture's layers: a conv weight
    is used at each output position, an FC or locally connected weight once."""
    a, c = alpha, 10
    head = 256 * a * 24 * a + 24 * a * c  # S-*: FC(24 alpha), FC(classes)
    plan = [(3, a, 32), (a, 2 * a, 16), (2 * a, 2 * a, 16), (2 * a, 4 * a, 8), (4 * a, 4 * a, 8),
            (4 * a, 8 * a, 4), (8 * a, 8 * a, 4), (8 * a, 16 * a, 2)]  # D-*: (in, out channels, output side)
    d_conv = sum(side * side * 9 * c_in * c_out for c_in, c_out, side in plan) + 64 * a * 64 * a + 64 * a * c
    sides = [32] + [side for _, _, side in plan]
    d_fc = sum(c_in * sides[i] ** 2 * c_out * side ** 2 for i, (c_in, c_out, side) in enumerate(plan)) + 64 * a * 64 * a + 64 * a * c
    width = models.three_fc_width(a)
    expected = {'s_fc': 3072 * 256 * a + head, 's_conv': 256 * 243 * a + head, 's_local': 256 * 243 * a + head,
                'three_fc': 3072 * width + width * width + width * c, 'd_conv': d_conv, 'd_local': d_conv, 'd_fc': d_fc}
    for k in (3, 5):
        resnet, channels, side = 32 * 32 * k * k * 3 * a, a, 32  # the stem
        for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            out, side = mult * a, side // stride
            resnet += side * side * (k * k * channels * out + 3 * k * k * out * out)  # 4 convs in 2 blocks
            resnet += side * side * channels * out if (stride, channels) != (1, out) else 0  # the 1x1 shortcut
            channels = out
        expected[f'resnet18-k{k}'] = resnet + 8 * a * c
    for name, count in expected.items():
        arch, _, k = name.partition('-k')
        model = models.build(arch, alpha, kernel_size=int(k or 3))
        assert models.macs_per_image(model) == count, (name, models.macs_per_image(model), count)
        for _, buffer in model.buffers():  # counting runs the net in evaluation: no statistic moves
            assert buffer.dtype.kind != 'f' or np.all((buffer == 0) | (buffer == 1)), name


def test_three_fc_matches_s_fc_size():
    for alpha in (2, 8):
        s_fc, three = models.build('s_fc', alpha), models.build('three_fc', alpha)
        width = three.layers[1].W.shape[1]
        assert abs(weights(three) - weights(s_fc)) <= 3072 + width + 10, (weights(three), weights(s_fc))
    assert models.build('three_fc', 2, width=100).layers[1].W.shape == (3072, 100)


def test_fc_counterparts_have_as_many_units_as_the_conv_map():
    conv, fc = models.build('d_conv', 2), models.build('d_fc', 2)
    conv_bns = [layer.gamma.size for layer in conv.layers if isinstance(layer, models.BatchNorm)]
    fc_bns = [layer.gamma.size for layer in fc.layers if isinstance(layer, models.BatchNorm)]
    spatial = [32, 16, 16, 8, 8, 4, 4, 2]
    assert fc_bns[:8] == [ch * s * s for ch, s in zip(conv_bns[:8], spatial)]
    assert conv_bns[8] == fc_bns[8] == 64 * 2  # D-CONV's first FC layer is 64 alpha wide
    assert models.build('s_conv', 2).layers[6].gamma.size == 24 * 2


def test_resnet18_counts():
    """At alpha 64, k 3, 10 classes: the familiar CIFAR ResNet18 count, 11,173,962 parameters
    (every conv weight, BN's gamma and beta, the last layer's weights and bias; no conv biases).
    Each conv weight grows with k^2; the 1x1 shortcuts, BN and the last layer do not."""
    assert models.build('resnet18', 64).num_params() == 11_173_962
    def split(k):
        model = models.build('resnet18', 4, kernel_size=k)
        convs = sum(layer.W.size for layer in models.leaves(model.layers)
                    if isinstance(layer, models.Conv2d) and layer.k == k)
        return convs, model.num_params() - convs
    (c3, rest3), (c5, rest5), (c9, rest9) = split(3), split(5), split(9)
    assert rest3 == rest5 == rest9 and c5 * 9 == c3 * 25 and c9 == 9 * c3
    stem_and_first = 3 * 9 * 64 + 2 * 2 * 9 * 64 * 64  # the 3x3 stem and stage 1's four 3x3 convs
    assert sum(layer.W.size for layer in models.leaves(models.build('resnet18', 64).layers[:6])
               if isinstance(layer, models.Conv2d)) == stem_and_first


def test_blasso_groups_of_resnet18():
    """Every convolution (shortcuts too) gets lam_conv, the last FC layer lam_fc, BN and bias 0."""
    import blasso
    model = models.build('resnet18', 2)
    groups = blasso.param_groups(model, 1.0, 2.0, verbose=False)
    convs = sum(p.size for p, _, lam in groups if lam == 1.0)
    assert convs == sum(layer.W.size for layer in models.leaves(model.layers) if isinstance(layer, models.Conv2d))
    assert [p.shape for p, _, lam in groups if lam == 2.0] == [(16, 10)]
    assert len(groups) == sum(1 for _ in model.params())


def test_same_seed_same_network():
    a, b = models.build('s_conv', 2, seed=7), models.build('s_conv', 2, seed=7)
    c = models.build('s_conv', 2, seed=8)
    pa, pb, pc = (list(m.params()) for m in (a, b, c))
    assert all(np.array_equal(p, q) for (_, p, _), (_, q, _) in zip(pa, pb))
    assert not np.array_equal(pa[0][1], pc[0][1])


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='resnet', alpha=2), 'unknown arch'),
    (dict(arch='s_fc', alpha=0), 'alpha must be a positive integer'),
    (dict(arch='s_fc', alpha=-3), 'alpha must be a positive integer'),
    (dict(arch='s_fc', alpha=1.5), 'alpha must be a positive integer'),
    (dict(arch='three_fc', alpha=2, width=0), 'width must be'),
    (dict(arch='resnet18', alpha=2, kernel_size=4), 'kernel_size must be an odd positive integer'),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        models.build(**kwargs)
    assert '\n' not in str(info.value)


def test_backends_agree(xp):
    """The same seed on NumPy and on CuPy: forward and backward, in float64 to within rounding,
    and in float32, the training dtype, to within its rounding as a deep net gathers it: each
    gradient as a whole, its largest difference against its largest value (element by element,
    D-FC's first-layer gradient, eight batch-norms deep, differs by more than 1e-3 in places)."""
    if xp is np:
        pytest.skip('compares CuPy with NumPy')
    rng = np.random.default_rng(0)
    y = np.array([1, 2, 3, 4])
    for dtype, tol in (('float64', 1e-10), ('float32', 1e-3)):
        x = rng.standard_normal((4, 3, 8, 8)).astype(dtype)
        for arch, k in [(arch, 3) for arch in models.ARCHS] + [('resnet18', 9)]:  # k 9: FFTConv2d (cupyx.scipy.fft)
            ref, model = (models.build(arch, 2, image_size=8, kernel_size=k, dtype=dtype) for _ in range(2))
            assert k == 3 or any(isinstance(layer, models.FFTConv2d) for layer in models.leaves(model.layers))
            models.to_device(model, xp)
            loss_ref, d_ref = models.softmax_cross_entropy(ref.forward(x), y)
            loss, d = models.softmax_cross_entropy(model.forward(xp.asarray(x)), xp.asarray(y))
            assert abs(float(loss) - float(loss_ref)) <= tol * abs(float(loss_ref)), (dtype, arch)
            ref.backward(d_ref)
            model.backward(d)
            for (name, _, g_ref), (_, _, g) in zip(ref.params(), model.params()):
                g = backend.to_numpy(g)
                assert g.dtype == g_ref.dtype == np.dtype(dtype), (dtype, arch, name)
                assert np.abs(g - g_ref).max() <= tol * np.abs(g_ref).max(), (dtype, arch, name)
