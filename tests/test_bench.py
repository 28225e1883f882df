"""bench.py runs and reports consistent figures (speed itself is measured, never asserted)."""
import numpy as np
import pytest

import bench
import models


@pytest.mark.parametrize('arch', ['s_fc', 's_local', 'd_conv'])
@pytest.mark.parametrize('opt', ['blasso', 'sgd'])
def test_bench_one_runs(arch, opt):
    r = bench.bench_one(arch, 1, 8, steps=3, warmup=1, device='cpu', opt=opt)
    hand = {'s_fc': 3072 * 256 + 256 * 24 + 24 * 10 + 2 * (256 + 24) + 10}  # weights, batch-norm, last bias
    assert r['params'] == hand.get(arch, models.build(arch, 1).num_params())
    assert 0 < r['update_share'] < 1 and r['gflops'] > 0 and r['matmul_gflops'] > 0


def test_the_largest_layer_is_the_product_each_method_runs():
    """S-CONV's first layer by bands multiplies (N*16*tiles, 9*span*3) by (9*span*3, tile*F);
    by im2col (N*256, 243) by (243, F)."""
    model = models.build('s_conv', 8)
    model.forward(np.zeros((4, 3, 32, 32), np.float32))
    assert bench.largest_layer(model, 4) == ((4 * 16 * 2, 9 * 23 * 3), (9 * 23 * 3, 64))  # tiles of 8, span 23
    bench.im2col_only(model)
    assert bench.largest_layer(model, 4) == ((4 * 256, 243), (243, 8))


def test_bench_one_reports_the_median_of_each_phase(monkeypatch):
    """With a clock whose phases take known times, three steps: each phase's figure is the median
    of its three durations (not their mean), the step's the median of the sums."""
    durations = iter([0.0, 0.0, 0.0, 0.0,  # warm-up step: forward, backward, update, and to the next step
                      1.0, 10.0, 100.0, 0.0,  # steps: forward, backward, update (seconds), gap
                      2.0, 20.0, 300.0, 0.0,
                      9.0, 90.0, 110.0, 0.0] + [0.5, 0.0] * 3)  # the update floor's three runs

    def fake_timer(xp):
        clock = [0.0]

        def mark():
            now = clock[0]
            clock[0] += next(durations, 0.0)
            return now
        return mark, lambda a, b: b - a
    monkeypatch.setattr(bench, 'timer', fake_timer)
    monkeypatch.setattr(bench, 'matmul_rate', lambda xp, a, b, repeat=5: 100.0)
    r = bench.bench_one('s_fc', 1, 8, steps=3, warmup=1, device='cpu', opt='blasso')
    assert (r['forward_ms'], r['backward_ms'], r['update_ms']) == (2000.0, 20000.0, 110000.0)  # means: 4, 40, 170
    assert r['step_ms'] == 1000 * 209 and r['step_min_ms'] == 1000 * 111  # the sums: 111, 322, 209
    assert r['update_floor_ms'] == 500.0
    assert r['update_share'] == pytest.approx(110 / 209)


def test_unfold_einsum_reference_is_the_same_layer():
    """The comparison is fair only if both compute the same thing: forward and weight gradient."""
    rng = np.random.default_rng(0)
    layer = models.Local2d(3, 4, 9, 2, 4, 32, 32, rng)
    x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    out, dW = bench.unfold_einsum_local(x, bench.einsum_weights(layer, 16, 16), 9, 2, 4)
    ours = layer.forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # channels last
    assert np.allclose(ours, out.transpose(0, 2, 3, 1), atol=1e-4)
    layer.backward(np.ones_like(ours), need_dx=False)
    dW = dW.transpose(0, 1, 3, 4, 2, 5).reshape(layer.dW.shape)  # (H', W', C, k, k, F) -> (P, k*k*C, F)
    assert np.allclose(layer.dW, dW, atol=1e-3)
    out_plain, dW_plain = bench.unfold_einsum_local(x, bench.einsum_weights(layer, 16, 16), 9, 2, 4, optimize=False)
    assert np.allclose(out_plain, out, atol=1e-4) and np.allclose(dW_plain.transpose(0, 1, 3, 4, 2, 5).reshape(dW.shape), dW, atol=1e-3)


def test_epoch_seconds_runs_a_whole_epoch():
    seconds, steps = bench.epoch_seconds('s_fc', 1, 64, 'cpu', 'faa', images=300)
    assert steps == 300 // 64 and seconds > 0


def test_bench_on_gpu(xp):
    """The GPU figures: CUDA-event timings, the memory pool's peak, both matmul rates."""
    if xp is np:
        pytest.skip('the GPU path')
    r = bench.bench_one('s_fc', 2, 64, steps=2, warmup=1, device='gpu', opt='blasso')
    assert r['device'] == 'gpu' and r['step_ms'] > 0 and r['peak_mb'] >= r['weights_and_grads_mb']
    assert r['forward_ms'] + r['backward_ms'] + r['update_ms'] == pytest.approx(r['step_ms'], rel=0.05)  # events add up
    rates = bench.gpu_matmul_rates(2048)
    assert rates['float32'] > 0 and rates['tf32'] > 0
    seconds, steps = bench.epoch_seconds('s_fc', 2, 64, 'gpu', 'faa', images=300)
    assert steps == 300 // 64 and seconds > 0


def test_timer_on_the_host_is_the_perf_counter():
    mark, seconds = bench.timer(np)
    a = mark()
    b = mark()
    assert 0 <= seconds(a, b) < 1


def test_conv_shapes_times_each_convolution_by_each_method():
    """Every convolution of the net appears once per shape, counted, with the rule's own pick."""
    rows = bench.conv_shapes('resnet18', 2, 2, 9, steps=1, device='cpu')
    model = models.build('resnet18', 2, kernel_size=9)
    convs = [layer for layer in models.leaves(model.layers) if isinstance(layer, models.Conv2d)]
    assert sum(count for _, count, _, _ in rows) == len(convs) == 20
    for method, cls in (('fft', models.FFTConv2d), ('band', models.BandConv2d)):
        picked = sum(count for _, count, _, pick in rows if pick == method)
        assert picked == sum(isinstance(layer, cls) for layer in convs) > 0
    assert all(times['im2col'] > 0 and times['band'] > 0 and times['fft'] > 0 for _, _, times, _ in rows)
    assert rows[0][0].endswith('(first: no dx)') and not any(what.endswith('dx)') for what, _, _, _ in rows[1:])


def test_im2col_only_keeps_the_weights_and_the_outputs():
    model = models.build('resnet18', 2, kernel_size=9, dtype='float64')
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    out = model.forward(x, train=False)
    weights = [p.copy() for _, p, _ in model.params()]
    assert any(isinstance(layer, models.BandConv2d) for layer in models.leaves(model.layers))
    bench.im2col_only(model)
    assert all(type(layer) is models.Conv2d for layer in models.leaves(model.layers) if isinstance(layer, models.Conv2d))
    assert all(np.array_equal(a, p) for a, (_, p, _) in zip(weights, model.params()))
    assert np.allclose(model.forward(x, train=False), out, atol=1e-10)
