"""beta-LASSO and SGD on hand-worked numbers, and the parameter groups they act on."""
import numpy as np
import pytest

import backend
import blasso
import models

# lr 0.1, lam 0.01, beta 5: each step shrinks by lr*lam = 0.001, and the cut-off is beta*lam = 0.05
P = [1.0, 0.06, 0.02, -0.5, 0.0, 0.0]
G = [0.5, 0.2, 1.0, 0.0, 0.3, -1.0]
AFTER_STEP = [
    1.0 - 0.1 * (0.5 + 0.01),  # 0.949: shrunk, kept
    0.06 - 0.1 * (0.2 + 0.01),  # 0.039 < 0.05: thresholded to zero
    0.02 - 0.1 * (1.0 + 0.01),  # -0.081: changed sign, kept
    -0.5 - 0.1 * (0.0 - 0.01),  # -0.499: shrunk towards zero from below, kept
    0.0 - 0.1 * 0.3,  # -0.03: sign(0) = 0, so no shrink; then below the cut-off
    0.0 + 0.1 * 1.0,  # 0.1: a zero weight revived by a large gradient
]


def run(p, g, lr, lam, beta, xp=np):
    p, g = xp.asarray(p, dtype=xp.float64), xp.asarray(g, dtype=xp.float64)
    blasso.blasso_step([(p, g, lam)], lr, beta)
    return p.get() if hasattr(p, 'get') else p


def test_every_branch(xp):
    expected = [0.949, 0.0, -0.081, -0.499, 0.0, 0.1]
    assert np.allclose(run(P, G, 0.1, 0.01, 5.0, xp), expected, atol=1e-15)


def test_beta_zero_is_l1_without_zeroing():
    assert np.allclose(run(P, G, 0.1, 0.01, 0.0), AFTER_STEP, atol=1e-15)


def test_lam_zero_is_sgd():
    assert np.allclose(run(P, G, 0.1, 0.0, 50.0), np.array(P) - 0.1 * np.array(G), atol=1e-15)


def test_numpy_scalars_are_scalars():
    """lr from np.cos is a NumPy scalar, not an array to cut into pieces."""
    assert np.array_equal(run(P, G, np.float64(0.1), np.float64(0.01), np.float32(5.0)), run(P, G, 0.1, 0.01, 5.0))
    p, g, v = np.array(P), np.array(G), {}
    blasso.sgd_step([('W', p, g)], np.float64(0.1), np.float64(0.9), 0.0, v)
    assert np.allclose(p, np.array(P) - 0.1 * np.array(G)) and np.allclose(v['W'], G)


def test_threshold_does_not_scale_with_lr():
    # with lr 1e-3 the cut-off is still beta*lam = 0.05, not lr*beta*lam
    assert run([0.04], [0.0], 1e-3, 0.01, 5.0)[0] == 0.0
    assert run([0.06], [0.0], 1e-3, 0.01, 5.0)[0] == pytest.approx(0.06 - 1e-5)


def test_large_arrays_match_a_whole_array_reference(xp):
    """Arrays span several update pieces; the result equals Algorithm 1 written on whole arrays."""
    rng = np.random.default_rng(0)
    n = 3 * backend.CHUNK + 17
    p, g = rng.standard_normal((n // 17, 17)) * 0.01, rng.standard_normal((n // 17, 17))
    reference = p - 0.1 * (g + 1e-3 * np.sign(p))
    reference *= np.abs(reference) >= 50 * 1e-3
    assert np.array_equal(run(p, g, 0.1, 1e-3, 50.0, xp), reference)


def test_groups_leave_biases_and_batchnorm_alone():
    model = models.build('s_fc', 2, image_size=8, dtype='float64')
    groups = blasso.param_groups(model, lam_conv=2e-2, lam_fc=1e-2, verbose=False)
    lams = [lam for _, _, lam in groups]
    names = [name for name, _, _ in model.params()]
    assert dict(zip(names, lams)) == {'1.W': 2e-2, '2.gamma': 0, '2.beta': 0, '4.W': 1e-2,
                                      '5.gamma': 0, '5.beta': 0, '7.W': 1e-2, '7.b': 0}
    before = {name: p.copy() for name, p, _ in model.params()}
    for _, p, g in model.params():
        p[...] += 0.3  # move everything off zero, gradients zero: only the l1 term acts
        g[...] = 0
    blasso.blasso_step(groups, lr=1.0, beta=0.0)
    for name, p, _ in model.params():
        lam = dict(zip(names, lams))[name]
        expected = before[name] + 0.3 - lam * np.sign(before[name] + 0.3)
        assert np.allclose(p, expected), name


def test_conv_like_layers():
    def conv_like_count(arch):
        model = models.build(arch, 2, image_size=8)
        return sum(lam == 1.0 for _, _, lam in blasso.param_groups(model, 1.0, 0.5, verbose=False))
    assert conv_like_count('s_fc') == conv_like_count('s_conv') == conv_like_count('s_local') == 1
    assert conv_like_count('d_fc') == conv_like_count('d_conv') == conv_like_count('d_local') == 8
    assert conv_like_count('three_fc') == 0


def test_group_sizes_are_printed(capsys):
    blasso.param_groups(models.build('s_fc', 2), 2e-5, 5e-6)
    out = capsys.readouterr().out
    assert 'conv-like 1,572,864 weights (lam 2e-05)' in out  # 3072 * 512
    assert 'fc 25,056 weights (lam 5e-06)' in out  # 512 * 48 + 48 * 10
    assert 'unpenalised' in out


def test_sgd_matches_pytorch_semantics():
    p = np.array([1.0, -2.0])
    g = np.array([0.5, 0.5])
    velocity = {}
    blasso.sgd_step([('w', p, g)], lr=0.1, momentum=0.9, weight_decay=0.01, velocity=velocity)
    d1 = np.array([0.5 + 0.01, 0.5 - 0.02])  # first step: v = d
    assert np.allclose(p, [1.0, -2.0] - 0.1 * d1)
    p_before = p.copy()
    blasso.sgd_step([('w', p, g)], lr=0.1, momentum=0.9, weight_decay=0.01, velocity=velocity)
    v2 = 0.9 * d1 + (g + 0.01 * p_before)
    assert np.allclose(p, p_before - 0.1 * v2)
    q = np.array([1.0])
    blasso.sgd_step([('q', q, np.array([2.0]))], lr=0.5, momentum=0, weight_decay=0, velocity={})
    assert q[0] == 0.0


def test_count_nonzero():
    model = models.build('s_fc', 2, image_size=8)
    model.layers[1].W[:10] = 0
    counts = blasso.count_nonzero(model)
    assert counts['1.W'] == model.layers[1].W.size - 10 * model.layers[1].W.shape[1]
    assert counts['total'] == counts['1.W'] + counts['4.W'] + counts['7.W']
    assert set(counts) == {'1.W', '4.W', '7.W', 'total'}


def test_fused_gpu_updates_match_numpy_to_the_bit(xp):
    """On CuPy each update is one ElementwiseKernel (--fmad=false): float32 results must equal
    NumPy's bit for bit, for beta-LASSO (with and without lam, beta) and SGD (with and without
    momentum), over several steps."""
    if xp is np:
        pytest.skip('compares the CuPy kernels with NumPy')
    rng = np.random.default_rng(0)
    shape = (257, 33)
    p0 = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    for lam, beta in ((2e-3, 50.0), (2e-3, 0.0), (0.0, 50.0)):
        p_np, p_gpu = p0.copy(), xp.asarray(p0)
        for g in grads:
            blasso.blasso_step([(p_np, g, lam)], 0.3, beta)
            blasso.blasso_step([(p_gpu, xp.asarray(g), lam)], 0.3, beta)
        assert np.array_equal(xp.asnumpy(p_gpu), p_np), (lam, beta)
    for momentum, wd in ((0.9, 5e-4), (0.0, 5e-4), (0.9, 0.0)):
        p_np, p_gpu, v_np, v_gpu = p0.copy(), xp.asarray(p0), {}, {}
        for g in grads:
            blasso.sgd_step([('W', p_np, g)], 0.1, momentum, wd, v_np)
            blasso.sgd_step([('W', p_gpu, xp.asarray(g))], 0.1, momentum, wd, v_gpu)
        assert np.array_equal(xp.asnumpy(p_gpu), p_np), (momentum, wd)
        assert all(np.array_equal(xp.asnumpy(v_gpu[k]), v_np[k]) for k in v_np)
