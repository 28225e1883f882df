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
    assert 'unpenalised 1,130 biases and batch-norm parameters' in out  # 2 * (512 + 48) batch-norm, 10 biases


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
    local = models.build('s_local', 1, image_size=8)  # its first weights are 3-D: (positions, k*k*C, F)
    assert blasso.count_nonzero(local)['1.W'] == local.layers[1].W.size == 16 * 243


def test_sgd_without_momentum_updates_every_parameter():
    params = [(name, np.ones(3), np.full(3, 2.0)) for name in ('a', 'b', 'c')]
    velocity = {}
    blasso.sgd_step(params, 0.1, 0.0, 0.0, velocity)
    assert all(np.allclose(p, 0.8) for _, p, _ in params) and velocity == {}  # no buffer without momentum


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_fused_gpu_updates_match_numpy_to_the_bit(xp):
    """On CuPy each update is one ElementwiseKernel (--fmad=false). Over several steps and on edge
    cases, every float32 result has NumPy's bits (the sign of a zero included), except where a
    subnormal is involved: CuPy compiles every kernel with -ftz=true (cupy/cuda/compiler.py
    appends it after the user's options), so a GPU flushes subnormals to zero."""
    if xp is np:
        pytest.skip('compares the CuPy kernels with NumPy')
    rng = np.random.default_rng(0)
    p0, g0 = (a.reshape(-1).copy() for a in np.meshgrid(EDGES, EDGES))
    p0 = np.concatenate([p0, (rng.standard_normal(4000) * 0.02).astype(np.float32)])
    grads = [np.concatenate([g0, rng.standard_normal(4000).astype(np.float32)]) for _ in range(3)]
    tiny = lambda a: (a != 0) & (np.abs(a) < np.finfo(np.float32).tiny)  # noqa: E731  subnormal

    def agree(gpu, cpu, *operands):
        gpu = xp.asnumpy(gpu)
        flushed = tiny(cpu) | np.any([tiny(o) for o in operands], axis=0)
        return same_bits(gpu[~flushed], cpu[~flushed])
    for lam, beta in ((2e-3, 50.0), (2e-3, 0.0), (0.0, 50.0)):
        p_np, p_gpu = p0.copy(), xp.asarray(p0)
        for g in grads:
            before = p_np.copy()
            blasso.blasso_step([(p_np, g, lam)], 0.3, beta)
            blasso.blasso_step([(p_gpu, xp.asarray(g), lam)], 0.3, beta)
            assert agree(p_gpu, p_np, before, g), (lam, beta)
            p_gpu = xp.asarray(p_np)  # each step from the same start: a flushed value does not spread
    for momentum, wd in ((0.9, 5e-4), (0.0, 5e-4), (0.9, 0.0)):
        p_np, p_gpu, v_np, v_gpu = p0.copy(), xp.asarray(p0), {}, {}
        for g in grads:
            before = p_np.copy()
            blasso.sgd_step([('W', p_np, g)], 0.1, momentum, wd, v_np)
            blasso.sgd_step([('W', p_gpu, xp.asarray(g))], 0.1, momentum, wd, v_gpu)
            assert agree(p_gpu, p_np, before, g, *v_np.values()), (momentum, wd)
            p_gpu = xp.asarray(p_np)
            v_gpu = {k: xp.asarray(v) for k, v in v_np.items()}


EDGES = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-40, -3e-39, 0.1, 0.1 + 2 ** -27, 0.1 - 2 ** -27, -0.1, 1.0, -0.5,
                  3e38, np.inf, -np.inf, np.nan], np.float32)  # zeros, subnormals, the cut-off 0.1 and an ulp either side


def c_twin(name, tmp_path):
    """backend.KERNELS[name]'s body compiled as C for float32 (gcc, no contraction, no fast math):
    a function of arrays, every input and output one float array, called through ctypes."""
    import ctypes
    import shutil
    import subprocess
    if not shutil.which('gcc'):
        pytest.skip('gcc is needed to compile the kernel bodies as C')
    inputs, outputs, body = backend.KERNELS[name]
    ins, outs = [v.split()[1] for v in inputs.split(',')], [v.split()[1] for v in outputs.split(',')]
    source = ('#include <math.h>\ntypedef float T;\nvoid run(int n, ' + ', '.join(f'T *{v}_' for v in ins + outs) +
              ') {\n  for (int i = 0; i < n; i++) {\n' + ''.join(f'    T {v} = {v}_[i];\n' for v in ins + outs) +
              body + ''.join(f'    {v}_[i] = {v};\n' for v in outs) + '  }\n}\n')
    (tmp_path / f'{name}.c').write_text(source)
    subprocess.run(['gcc', '-O1', '-std=c99', '-ffp-contract=off', '-fPIC', '-shared', '-o', str(tmp_path / f'{name}.so'),
                    str(tmp_path / f'{name}.c'), '-lm'], check=True)
    run = ctypes.CDLL(str(tmp_path / f'{name}.so')).run

    def call(**arrays):  # every argument a float32 array of one size, outputs updated in place
        pointer = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))  # noqa: E731
        run(ctypes.c_int(arrays[outs[0]].size), *(pointer(arrays[v]) for v in ins + outs))
    return call


def same_bits(a, b):
    """Equal bit patterns (so the sign of a zero counts), NaN against NaN of any payload."""
    both_nan = np.isnan(a) & np.isnan(b)
    return np.array_equal(a.view(np.uint32)[~both_nan], b.view(np.uint32)[~both_nan]) and np.array_equal(np.isnan(a), np.isnan(b))


@pytest.mark.filterwarnings('ignore::RuntimeWarning')  # inf - inf and the like, on purpose
def test_kernel_bodies_compiled_as_c_equal_the_numpy_lines(tmp_path):
    """The CUDA twins of blasso.py's updates restate its NumPy lines operation for operation: run
    as C on edge cases (zeros of both signs, subnormals, the cut-off and an ulp either side,
    infinities, NaN), every result has NumPy's bits. On a GPU one difference remains, CuPy's
    flush-to-zero of subnormals (it compiles every kernel with -ftz=true), which a CPU keeps."""
    p0, g0 = (a.reshape(-1).copy() for a in np.meshgrid(EDGES, EDGES))
    full = lambda value: np.full(p0.shape, value, np.float32)  # noqa: E731
    blasso_c = c_twin('blasso_update', tmp_path)
    for lr, lam, beta in ((0.5, 0.002, 50.0), (0.5, 0.0, 50.0), (1.0, 0.01, 0.0), (0.1, 0.002, 50.0)):
        p_np, p_c = p0.copy(), p0.copy()
        blasso.blasso_update(p_np, g0, lr, lam, beta * lam)
        blasso_c(g=g0, lr=full(lr), lam=full(lam), threshold=full(beta * lam), p=p_c)
        assert same_bits(p_np, p_c), (lr, lam, beta, p0[~(p_np.view(np.uint32) == p_c.view(np.uint32))][:5])
    sgd_c, momentum_c = c_twin('sgd_update', tmp_path), c_twin('momentum_update', tmp_path)
    for lr, wd in ((0.1, 5e-4), (0.1, 0.0)):
        p_np, p_c = p0.copy(), p0.copy()
        blasso.sgd_update(p_np, g0, lr, wd)
        sgd_c(g=g0, lr=full(lr), weight_decay=full(wd), p=p_c)
        assert same_bits(p_np, p_c), (lr, wd)
        v0 = np.roll(g0, 7)
        p_np, p_c, v_np, v_c = p0.copy(), p0.copy(), v0.copy(), v0.copy()
        blasso.momentum_update(p_np, v_np, g0, lr, 0.9, wd)
        momentum_c(g=g0, lr=full(lr), momentum=full(0.9), weight_decay=full(wd), p=p_c, v=v_c)
        assert same_bits(p_np, p_c) and same_bits(v_np, v_c), (lr, wd)


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_the_c_check_sees_a_changed_body(tmp_path, monkeypatch):
    """The check above fails when a kernel body drifts from the NumPy lines: here, the threshold
    compared with > instead of >=, and the sign of a zero lost."""
    inputs, outputs, body = backend.KERNELS['blasso_update']
    monkeypatch.setitem(backend.KERNELS, 'blasso_update', (inputs, outputs, body.replace('>= threshold', '> threshold')))
    with pytest.raises(AssertionError):
        test_kernel_bodies_compiled_as_c_equal_the_numpy_lines(tmp_path)
