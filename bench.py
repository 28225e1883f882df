"""How fast a training step is, against what this machine's matrix products can do.

    python bench.py                                         # the five nets at alpha 8, batch 128, CPU
    python bench.py --arch s_fc --alpha 150 --steps 1       # S-FC at the paper's size: peak memory
    python bench.py --device gpu --alpha 150 --batch-size 512 --arch s_fc,s_conv,s_local
    python bench.py --arch resnet18 --kernel-size 9 --batch-size 64   # ResNet18 with 9x9 kernels
    python bench.py --conv-shapes --arch resnet18 --kernel-size 9      # its convolutions alone: im2col against FFT
    python bench.py --local-vs-einsum                       # Local2d against unfold + einsum
    python bench.py --sparse runs/s_fc-blasso-a8            # a model exported by export.py: CSR against dense
    python bench.py --epoch --device gpu --arch s_fc --alpha 150 --batch-size 512   # one whole epoch, data included

Each net runs in a fresh process, so its peak resident memory is its own. Times are the median
and minimum over --steps steps after --warmup; on a GPU they are CUDA events, and the device's
own square matmul rate is measured in float32 and with TF32 tensor cores.
Rates count the multiply-adds of the linear, conv and local layers (2 flops each) of forward,
weight gradient and input gradient (none for the first layer: its input needs none).
"""
import argparse
import itertools
import json
import multiprocessing
import os
import resource
import time

import numpy as np

ARCHS = ['s_fc', 'three_fc', 's_conv', 's_local', 'd_conv']


def array_module(device):
    import backend
    if device == 'gpu' or (device == 'auto' and backend.gpu_available()):
        if not backend.gpu_available():
            raise SystemExit('error: --device gpu needs CuPy and a visible GPU')
        return backend.cupy
    return np


def timer(xp):
    """(mark, seconds): mark() notes a point in time, seconds(a, b) is the time between two marks.
    On a GPU the marks are CUDA events recorded in the stream: they time the work the GPU did
    between them without stopping the host at each mark; seconds() waits for the later one."""
    if xp is np:
        return time.perf_counter, lambda a, b: b - a

    def mark():
        event = xp.cuda.Event()
        event.record()
        return event

    def seconds(a, b):
        b.synchronize()
        return xp.cuda.get_elapsed_time(a, b) / 1e3  # milliseconds -> seconds
    return mark, seconds


def matmul_rate(xp, a_shape, b_shape, repeat=5):
    """float32 GFLOP/s of a @ b (batched if 3-D) on xp, best of `repeat`."""
    a = xp.ones(a_shape, np.float32)
    b = xp.ones(b_shape, np.float32)
    (mark, seconds), best = timer(xp), float('inf')
    a @ b
    for _ in range(repeat):
        t0 = mark()
        a @ b
        best = min(best, seconds(t0, mark()))
    flops = 2 * np.prod(a_shape) * b_shape[-1]
    return flops / best / 1e9


def gpu_matmul_rates(square=8192):
    """The GPU's square float32 matmul rate with and without TF32 tensor cores, GFLOP/s. CuPy
    reads CUPY_TF32 once, at its first matmul, so each runs in a fresh process."""
    spawn = multiprocessing.get_context('spawn')
    rates = {}
    for name, tf32 in (('float32', '0'), ('tf32', '1')):
        with spawn.Pool(1) as pool:
            rates[name] = pool.apply(_matmul_rate_with, (tf32, square))
    return rates


def _matmul_rate_with(tf32, square):
    os.environ['CUPY_TF32'] = tf32
    import backend
    return matmul_rate(backend.cupy, (square, square), (square, square))


def largest_layer(model, batch):
    """The operand shapes of the forward product of the layer with the most multiply-adds."""
    import models
    best, shapes = 0, None
    for layer in models.leaves(model.layers):
        if isinstance(layer, models.Linear):
            macs, s = layer.W.size, ((batch, layer.W.shape[0]), layer.W.shape)
        elif isinstance(layer, models.BandConv2d):  # its product: (N*H'*tiles, k*span*C) @ (k*span*C, t*F)
            h, w = layer.x_shape[1:3]
            h_out, _, tiles, span, _ = models.band_shape(h, w, layer.k, layer.stride, layer.pad, layer.tile)
            kspan_c = layer.k * span * layer.W.shape[0] // layer.k ** 2
            macs, s = models.layer_macs(layer), ((batch * h_out * tiles, kspan_c), (kspan_c, layer.tile * layer.W.shape[1]))
        elif isinstance(layer, models.Conv2d):
            p = models.layer_macs(layer) // layer.W.size  # output positions: each weight is used once at each
            macs, s = layer.W.size * p, ((p * batch, layer.W.shape[0]), layer.W.shape)
        elif isinstance(layer, models.Local2d):
            p, ckk, f = layer.W.shape
            macs, s = layer.W.size, ((p, batch, ckk), layer.W.shape)
        else:
            continue
        if macs > best:
            best, shapes = macs, s
    return shapes


def bench_one(arch, alpha, batch, steps, warmup, device, opt, kernel_size=3, conv='rule'):
    """One net in this process: times, rates and peak memory, as a dict."""
    import blasso
    import models
    xp = array_module(device)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = models.to_device(models.build(arch, alpha, kernel_size=kernel_size), xp)
    if conv == 'im2col':
        im2col_only(model)
    first = next(layer for layer in model.layers if any(True for _ in layer.params()))
    macs = models.macs_per_image(model)
    flops = 2 * batch * (3 * macs - models.layer_macs(first))  # no input gradient in the first layer
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32))
    y = xp.asarray(rng.integers(0, 10, batch))
    groups = blasso.param_groups(model, 2e-5, 5e-6, verbose=False)
    velocity = {}
    mark, seconds = timer(xp)
    times = {'forward': [], 'backward': [], 'update': [], 'step': []}
    for i in range(warmup + steps):
        t0 = mark()
        loss, dlogits = models.softmax_cross_entropy(model.forward(x), y)
        t1 = mark()
        model.backward(dlogits, need_dx=False)
        t2 = mark()
        if opt == 'blasso':
            blasso.blasso_step(groups, 0.01, 50.0)
        else:
            blasso.sgd_step(model.params(), 0.01, 0.9, 5e-4, velocity)
        t3 = mark()
        if i >= warmup:
            for key, (a, b) in zip(times, ((t0, t1), (t1, t2), (t2, t3), (t0, t3))):
                times[key].append(seconds(a, b))
    med = {k: float(np.median(v)) for k, v in times.items()}
    floor = []  # the least any update costs: read every weight and gradient, write the weight
    for _ in range(steps):
        t0 = mark()
        for _, p, g in model.params():
            xp.add(p, g, out=p)
        floor.append(seconds(t0, mark()))
    # CuPy's memory pool keeps every block it has allocated (nothing here frees it), so what it
    # holds now is the most the steps needed at once, rounded up to its blocks
    peak = (xp.get_default_memory_pool().total_bytes() / 2 ** 20 if xp is not np
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    a_shape, b_shape = largest_layer(model, batch)
    square = 4096 if xp is not np else 2048
    peak_rate = matmul_rate(xp, (square, square), (square, square))
    layer_rate = matmul_rate(xp, a_shape, b_shape)
    achieved = flops / med['step'] / 1e9
    return dict(arch=arch, alpha=alpha, batch=batch, opt=opt, device='gpu' if xp is not np else 'cpu',
                params=model.num_params(), step_ms=1e3 * med['step'], step_min_ms=1e3 * min(times['step']),
                forward_ms=1e3 * med['forward'], backward_ms=1e3 * med['backward'], update_ms=1e3 * med['update'],
                update_floor_ms=1e3 * float(np.median(floor)),
                images_per_s=batch / med['step'], gflops=achieved, matmul_gflops=peak_rate,
                largest_layer=f'{a_shape}@{tuple(b_shape)}', largest_layer_gflops=layer_rate,
                fraction_of_matmul=achieved / peak_rate, update_share=med['update'] / med['step'],
                fwd_bwd_fraction=flops / (med['forward'] + med['backward']) / 1e9 / peak_rate,
                peak_mb=peak, start_mb=rss_start if xp is np else 0.0,
                weights_and_grads_mb=2 * sum(p.nbytes for _, p, _ in model.params()) / 2 ** 20)


def conv_shapes(arch, alpha, batch, kernel_size, steps, device):
    """Every distinct convolution of a net, timed alone by each method, as in training: forward
    and backward, with the input gradient except in the net's first layer, which needs none.
    Rows: (what, count in the net, {method: median seconds}, the method models.conv2d picks).
    The bands are timed in the rule's tiles, 64 // F output positions (at least 1), for every layer."""
    import models

    def band_layer(c, f, k, s, p, rng):
        return models.BandConv2d(c, f, k, s, p, rng, tile=max(64 // f, 1))
    xp = array_module(device)
    mark, seconds = timer(xp)
    model = models.to_device(models.build(arch, alpha, kernel_size=kernel_size), xp)
    rng = np.random.default_rng(0)
    model.forward(xp.asarray(rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)), train=False)
    convs = [layer for layer in models.leaves(model.layers) if isinstance(layer, models.Conv2d)]
    shapes = {}
    for layer in convs:
        key = (layer.x_shape, layer.W.shape[1], layer.k, layer.stride, layer.pad, layer is convs[0])
        shapes[key] = shapes.get(key, 0) + 1
    rows = []
    for (x_shape, f, k, s, p, first), count in shapes.items():
        n, h, w, c = x_shape
        x = xp.asarray(rng.standard_normal(x_shape, dtype=np.float32))
        times = {}
        for name, make in (('im2col', models.Conv2d), ('band', band_layer), ('fft', models.FFTConv2d)):
            layer = models.to_device(models.Sequential([make(c, f, k, s, p, rng)]), xp).layers[0]
            dout = xp.ones_like(layer.forward(x))
            ts = []
            for i in range(1 + steps):
                t0 = mark()
                layer.forward(x)
                layer.backward(dout, need_dx=not first)
                if i:
                    ts.append(seconds(t0, mark()))
            times[name] = float(np.median(ts))
        picked = type(models.conv2d(c, f, k, s, p, h, rng, first=first)).__name__
        what = f'{c:3d}->{f:3d} k{k:<2d} s{s} {h:2d}x{w:<2d}' + (' (first: no dx)' if first else '')
        rows.append((what, count, times, {'FFTConv2d': 'fft', 'BandConv2d': 'band'}.get(picked, 'im2col')))
    return rows


def unfold_einsum_local(x, W, k, stride, pad, optimize=True):
    """The locally connected layer as usually written (cf. pytorch/pytorch#499): unfold the input
    into a strided window view, then einsum against per-position filters. Forward and weight
    gradient (S-LOCAL's first layer needs no input gradient); for comparison only.
    optimize=False is np.einsum's default, a C loop; True lets it contract through BLAS.
    x: (N, C, H, W); W: (H', W', C, k, k, F)."""
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xpad, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.einsum('nchwij,hwcijf->nfhw', windows, W, optimize=optimize)  # (N, F, H', W')
    dout = np.ones_like(out)
    dW = np.einsum('nchwij,nfhw->hwcijf', windows, dout, optimize=optimize)
    return out, dW


def einsum_weights(layer, h_out, w_out):
    """Local2d's W (P, k*k*C, F) in the einsum layer's layout (H', W', C, k, k, F)."""
    p, kkc, f = layer.W.shape
    return layer.W.reshape(h_out, w_out, layer.k, layer.k, -1, f).transpose(0, 1, 4, 2, 3, 5)


def local_vs_einsum(alpha, batch, steps):
    """S-LOCAL's first layer (9x9, stride 2, pad 4): Local2d against unfold + einsum, forward and
    weight gradient, as in training; each on its own layout of the same images (Local2d's
    channels-last, the einsum layer's (N, C, H, W) as PyTorch's unfold has it)."""
    import models
    rng = np.random.default_rng(0)
    layer = models.Local2d(3, alpha, 9, 2, 4, 32, 32, rng)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, C)
    W6 = einsum_weights(layer, 16, 16)
    out_ref = unfold_einsum_local(x, W6, 9, 2, 4)[0]
    assert np.allclose(layer.forward(x_last), out_ref.transpose(0, 2, 3, 1), atol=1e-3), 'the two layers disagree'

    def ours():
        out = layer.forward(x_last)
        layer.backward(np.ones_like(out), need_dx=False)

    results = {}
    for name, fn in (('Local2d (batched matmul)', ours),
                     ('unfold + einsum(optimize=True)', lambda: unfold_einsum_local(x, W6, 9, 2, 4)),
                     ('unfold + einsum (default)', lambda: unfold_einsum_local(x, W6, 9, 2, 4, optimize=False))):
        fn()
        ts = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        results[name] = float(np.median(ts))
    return results


def im2col_only(model):
    """The model with every FFTConv2d and BandConv2d computed by im2col instead: the net as it runs
    without models.conv2d's rule (the same weights; both only add a forward and backward)."""
    import models
    for layer in models.leaves(model.layers):
        if isinstance(layer, (models.FFTConv2d, models.BandConv2d)):
            layer.__class__ = models.Conv2d
    return model


def epoch_seconds(arch, alpha, batch, device, augment='faa', images=50000, kernel_size=3, conv='rule'):
    """Seconds for one training epoch of `images` CIFAR-sized images, data path included: the
    Loader's shuffle, augmentation (faa: the policy, crop, flip, Cutout) and normalisation on the
    device, forward, backward, beta-LASSO update, and the loss and accuracy sums. The images are
    random: the cost does not depend on what they show."""
    import blasso
    import data
    import models
    xp = array_module(device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, images)
    loader = data.Loader(x, y, batch, xp, [125.3, 123.0, 113.9], [63.0, 62.1, 66.7], train=True,
                         policy='fa_reduced_cifar10' if augment == 'faa' else None, cutout=16 if augment == 'faa' else 0,
                         crop=augment != 'none', flip=augment != 'none')
    model = models.to_device(models.build(arch, alpha, kernel_size=kernel_size), xp)
    if conv == 'im2col':
        im2col_only(model)
    groups = blasso.param_groups(model, 2e-5, 5e-6, verbose=False)
    for inputs, labels in itertools.islice(loader.epoch(1), 2):  # untimed: compiles kernels, starts cuBLAS
        loss, dlogits = models.softmax_cross_entropy(model.forward(inputs), labels)
        model.backward(dlogits, need_dx=False)
        blasso.blasso_step(groups, 0.0, 50.0)
    loss_sum = xp.zeros((), np.float64)
    t0 = time.perf_counter()  # the host's clock: the epoch as a user waits for it, host work included
    for inputs, labels in loader.epoch(0):
        loss, dlogits = models.softmax_cross_entropy(model.forward(inputs), labels)
        model.backward(dlogits, need_dx=False)
        blasso.blasso_step(groups, 0.01, 50.0)
        loss_sum += loss.astype(np.float64)
    float(loss_sum)  # sync point: the epoch is done
    return time.perf_counter() - t0, len(loader)


def sparse_vs_dense(run_dir, steps):
    """Forward images/s of a trained model (export.py's model.npz) dense and with its CSR layers,
    whole and first layer alone, at batch 1, 128 and 1024 (CPU)."""
    import os
    import export
    config, dense, csr, buffers, stats = export.load(os.path.join(run_dir, export.MODEL_FILE))
    model = export.build(config, dense, csr, buffers)
    sparse = export.sparse_model(model, csr)
    i = next((i for i, layer in enumerate(sparse.layers) if isinstance(layer, export.SparseLinear)), None)
    if i is None:
        raise SystemExit(f'error: {run_dir}/{export.MODEL_FILE} stores no layer in CSR: nothing to compare')
    rng, rows = np.random.default_rng(0), []
    for batch in (1, 128, 1024):
        x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
        x_first = model.layers[0].forward(x) if i == 1 else None  # S-FC, 3-FC: the flattened images
        cases = [('whole model', model, sparse, x)]
        if x_first is not None:
            cases.append((f'layer {i} alone', model.layers[i], sparse.layers[i], x_first))
        for what, dense_net, sparse_net, inputs in cases:
            times = []
            for net in (dense_net, sparse_net):
                net.forward(inputs, train=False)
                ts = []
                for _ in range(max(3, steps if batch > 1 else 10 * steps)):
                    t0 = time.perf_counter()
                    net.forward(inputs, train=False)
                    ts.append(time.perf_counter() - t0)
                times.append(float(np.median(ts)))
            rows.append(dict(what=what, batch=batch, dense_images_per_s=batch / times[0],
                             sparse_images_per_s=batch / times[1], speedup=times[0] / times[1]))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description='Time training steps and compare them with the matmul rate.',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--arch', default=','.join(ARCHS), help='comma-separated architectures')
    p.add_argument('--alpha', type=int, default=8, help='base channels')
    p.add_argument('--batch-size', type=int, default=128, help='batch size')
    p.add_argument('--steps', type=int, default=10, help='timed steps per net')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--device', default='cpu', choices=['auto', 'cpu', 'gpu'], help='where to run')
    p.add_argument('--opt', default='blasso', choices=['blasso', 'sgd'], help='the update in the step')
    p.add_argument('--kernel-size', type=int, default=3, help="resnet18's kernel size (Fig. 5)")
    p.add_argument('--conv', default='rule', choices=['rule', 'im2col'],
                   help="how convolutions run: models.conv2d's per-shape rule, or all by im2col")
    p.add_argument('--images', type=int, default=50000, help='--epoch: images in the epoch')
    p.add_argument('--conv-shapes', action='store_true',
                   help="time each distinct convolution of --arch alone by im2col, bands and FFT, beside conv2d's pick")
    p.add_argument('--local-vs-einsum', action='store_true', help='compare Local2d with unfold + einsum')
    p.add_argument('--sparse', metavar='RUN_DIR', help="forward speed of RUN_DIR's model.npz (export.py): CSR vs dense")
    p.add_argument('--epoch', action='store_true', help='time one whole CIFAR-sized training epoch, data path included')
    p.add_argument('--augment', default='faa', choices=['faa', 'basic', 'none'], help='--epoch: the augmentation')
    p.add_argument('--json', action='store_true', help='also print one JSON line per net')
    args = p.parse_args(argv)
    if args.device == 'gpu' or (args.device == 'auto' and array_module('auto') is not np):
        array_module(args.device)  # one line if there is none
        rates = gpu_matmul_rates()
        print(f'this GPU, square 8192 matmul: float32 {rates["float32"]:,.0f} GFLOP/s, TF32 {rates["tf32"]:,.0f} GFLOP/s '
              f'(training runs float32 unless CUPY_TF32=1)')
    if args.epoch:
        for arch in args.arch.split(','):
            seconds, steps = epoch_seconds(arch, args.alpha, args.batch_size, args.device, args.augment, args.images,
                                           args.kernel_size, args.conv)
            print(f'{arch} alpha {args.alpha}' + (f' k {args.kernel_size}' if arch == 'resnet18' else '') +
                  f': one epoch of {args.images:,} images ({steps} steps of {args.batch_size}, --augment {args.augment}, '
                  f'beta-LASSO, --conv {args.conv}) in {seconds:.2f} s on the {array_module(args.device).__name__} backend')
        return
    if args.sparse:
        print(f'{"forward of":16s} {"batch":>5s} {"dense img/s":>12s} {"CSR img/s":>12s} {"CSR speed-up":>12s}')
        for r in sparse_vs_dense(args.sparse, args.steps):
            print(f'{r["what"]:16s} {r["batch"]:5d} {r["dense_images_per_s"]:12,.0f} {r["sparse_images_per_s"]:12,.0f} '
                  f'{r["speedup"]:11.1f}x')
        print('CPU, float32, medians; CSR: scipy.sparse for the layers export.py stored in CSR, dense BLAS for the rest')
        return
    if args.conv_shapes:
        for arch in args.arch.split(','):
            rows = conv_shapes(arch, args.alpha, args.batch_size, args.kernel_size, args.steps, args.device)
            print(f'{arch} alpha {args.alpha} k {args.kernel_size} batch {args.batch_size}: forward + backward, ms')
            print(f'{"convolution":36s} {"count":>5s} {"im2col":>8s} {"band":>8s} {"fft":>8s} {"fastest":>7s} {"picked":>7s}')
            total = dict(im2col=0.0, band=0.0, fft=0.0, picked=0.0, best=0.0)
            for what, count, times, picked in rows:
                fastest = min(times, key=times.get)
                print(f'{what:36s} {count:5d} {1e3 * times["im2col"]:8.1f} {1e3 * times["band"]:8.1f} '
                      f'{1e3 * times["fft"]:8.1f} {fastest:>7s} {picked:>7s}' + ('' if picked == fastest else '  *'))
                for key, method in (('im2col', 'im2col'), ('band', 'band'), ('fft', 'fft'), ('picked', picked),
                                    ('best', fastest)):
                    total[key] += count * times[method]
            print(f'{"all its convolutions":36s} {"":5s} {1e3 * total["im2col"]:8.1f} {1e3 * total["band"]:8.1f} '
                  f'{1e3 * total["fft"]:8.1f}   picked {1e3 * total["picked"]:.1f}, fastest {1e3 * total["best"]:.1f}  '
                  f'(*: the rule missed the fastest)')
        return
    if args.local_vs_einsum:
        times = local_vs_einsum(args.alpha, args.batch_size, args.steps)
        ours = times['Local2d (batched matmul)']
        for name, seconds in times.items():
            print(f'{name:31s} {1e3 * seconds:8.1f} ms  {seconds / ours:5.1f}x Local2d\'s time')
        print(f'(forward + weight gradient of S-LOCAL\'s first layer, alpha {args.alpha}, batch {args.batch_size})')
        return
    array_module(args.device)  # fail here, in one line, rather than in a worker
    spawn = multiprocessing.get_context('spawn')  # a fresh process per net: its own peak memory
    header = (f'{"arch":9s} {"alpha":>5s} {"params":>12s} {"step ms":>8s} {"min ms":>7s} {"fwd":>6s} {"bwd":>6s} '
              f'{"update":>6s} {"floor":>6s} {"img/s":>8s} {"GFLOP/s":>8s} {"matmul":>7s} {"ratio":>6s} {"f+b":>5s} {"upd %":>6s} '
              f'{"peak MB":>8s}')
    print(header)
    for arch in args.arch.split(','):
        with spawn.Pool(1) as pool:
            r = pool.apply(bench_one, (arch, args.alpha, args.batch_size, args.steps, args.warmup, args.device, args.opt,
                                       args.kernel_size, args.conv))
        print(f'{arch:9s} {r["alpha"]:5d} {r["params"]:12,d} {r["step_ms"]:8.1f} {r["step_min_ms"]:7.1f} '
              f'{r["forward_ms"]:6.1f} {r["backward_ms"]:6.1f} {r["update_ms"]:6.1f} {r["update_floor_ms"]:6.1f} '
              f'{r["images_per_s"]:8,.0f} '
              f'{r["gflops"]:8.1f} {r["matmul_gflops"]:7.1f} {r["fraction_of_matmul"]:6.0%} {r["fwd_bwd_fraction"]:5.0%} '
              f'{r["update_share"]:6.1%} {r["peak_mb"]:8.0f}')
        if args.json:
            print(json.dumps(r))
    print(f'device {r["device"]}, batch {args.batch_size}, {args.opt} update, float32; ratio: the step\'s GFLOP/s '
          f'over a square matmul\'s, measured in the same process; f+b: the same without the update; '
          f'floor: p += g over every weight, the least any update costs')


if __name__ == '__main__':
    main()
