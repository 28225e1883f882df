# %% [markdown]
# # A tour of blasso
#
# The paper's point in four steps, each printing what you should see. Run it as a script,
# `python tour.py` (about two minutes on 2 CPU cores), or open it as a notebook (jupytext reads
# this percent format). It trains on the real CIFAR-10 when `BLASSO_DATA` names a folder
# holding it, and on images it makes otherwise.

# %%
import os
import sys

import numpy as np

import blasso
import data
import models
import report

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join('runs', 'tour')  # where the pictures go
os.makedirs(OUT, exist_ok=True)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## 1. A layer is a forward and a backward
#
# `Linear` computes `out = x @ W + b`. Its backward receives dL/dout and returns dL/dx, and
# writes dL/dW = x.T @ dout and dL/db = dout summed over the batch. A centred difference of
# L = sum(out * dout) checks each of them: the relative error should be around 1e-10.

# %%
rng = np.random.default_rng(0)
layer = models.Linear(4, 3, rng, dtype=np.float64)
x = rng.standard_normal((2, 4))
dout = rng.standard_normal((2, 3))
layer.forward(x)
dx = layer.backward(dout)


def numerical_gradient(array, h=1e-5):
    """dL/d(array) by centred differences, L = sum(layer.forward(x) * dout)."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        old = array[i]
        array[i] = old + h
        plus = np.sum(layer.forward(x) * dout)
        array[i] = old - h
        minus = np.sum(layer.forward(x) * dout)
        array[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b):
    return np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b))


for name, analytic, array in (('dx', dx, x), ('dW', layer.dW, layer.W), ('db', layer.db, layer.b)):
    print(f'Linear {name}: relative error against centred differences {rel_error(analytic, numerical_gradient(array)):.0e}')

# %% [markdown]
# ## 2. FC ⊃ LOCAL ⊃ CONV
#
# A 3×3 convolution on 8×8 RGB images, 4 filters. The same map as a locally connected layer
# is that layer with one filter copied to every position, and as a fully connected layer it is
# a dense matrix holding those filters where each position looks. The three give the same
# output; they differ in how many weights are free to learn.

# %%
conv = models.Conv2d(3, 4, 3, 1, 1, rng, dtype=np.float64)
local = models.Local2d(3, 4, 3, 1, 1, 8, 8, rng, dtype=np.float64)
local.W[...] = conv.W  # (64, 27, 4): the conv's (27, 4) filter at each of the 64 positions
dense = np.zeros((8 * 8 * 3, 8 * 8 * 4))  # inputs and outputs flattened channels-last
for i in range(8):
    for j in range(8):
        for di in range(3):
            for dj in range(3):
                y, x_ = i + di - 1, j + dj - 1
                if 0 <= y < 8 and 0 <= x_ < 8:
                    rows = (y * 8 + x_) * 3 + np.arange(3)
                    dense[rows, (i * 8 + j) * 4:(i * 8 + j + 1) * 4] = conv.W[(di * 3 + dj) * 3:(di * 3 + dj + 1) * 3]
images = rng.standard_normal((2, 8, 8, 3))
out = {'CONV': conv.forward(images), 'LOCAL': local.forward(images),
       'FC': (images.reshape(2, -1) @ dense).reshape(2, 8, 8, 4)}
free = {'CONV': conv.W.size, 'LOCAL': local.W.size, 'FC': dense.size}
for name in ('FC', 'LOCAL', 'CONV'):
    print(f'{name:5s} weights {free[name]:>6,}  out {out[name].shape}  '
          f'max |out - CONV| {np.abs(out[name] - out["CONV"]).max():.1e}')
print(f'non-zeros of the dense matrix: {np.count_nonzero(dense):,} of {dense.size:,}: '
      'a convolution is a sparse, local, weight-shared fully connected layer')

# %% [markdown]
# ## 3. β-LASSO on six numbers
#
# Algorithm 1 is two lines: a gradient step on the loss plus λ‖θ‖₁, then a hard threshold that
# zeroes every weight below β·λ. With lr 0.1, λ 0.01 and β 5, each weight moves by
# -lr·(g + λ·sign(θ)) and survives only if |θ| ≥ 0.05.

# %%
theta = np.array([1.0, 0.06, 0.02, -0.5, 0.0, 0.0])
grad = np.array([0.5, 0.2, 1.0, 0.0, 0.3, -1.0])
lr, lam, beta = 0.1, 0.01, 5.0
stepped = theta - lr * (grad + lam * np.sign(theta))
print('theta              ', theta)
print('after the l1 step  ', stepped)
print('|theta| >= beta*lam', np.abs(stepped) >= beta * lam)
after = theta.copy()
blasso.blasso_step([(after, grad, lam)], lr, beta)
print('after the threshold', after + 0.0, '(blasso.blasso_step)')  # + 0.0: print -0.0 as 0

# %% [markdown]
# ## 4. A fully connected layer turns local
#
# S-FC at α = 2 (3072 inputs to 512 units in its first layer, 1.6M weights), trained for a
# minute with SGD and with β-LASSO. Under β-LASSO most first-layer weights fall below the
# threshold, and those that remain sit close together on the image. The locality score is the
# share of a unit's weight mass inside its best 9×9 window (dense: about 0.1, a locally
# connected layer: 1.0). S-CONV's first layer at this α has 486 weights, S-LOCAL's 124,416.

# %%
def load_images():
    """CIFAR-10 through BLASSO_DATA, or images made here: two classes of a Gaussian random
    field squashed by tanh, told apart by their correlation length (1 or 2.5 pixels), which only
    local features can measure."""
    folder = os.environ.get('BLASSO_DATA', '')
    if os.path.isdir(os.path.join(folder, 'cifar-10-batches-py')):
        x, y, xt, yt = data.load('cifar10', folder)
        keep, keep_test = data.balanced_subset(y, 4000, 0), data.balanced_subset(yt, 2000, 0)
        return x[keep], y[keep], xt[keep_test], yt[keep_test], 10, 'CIFAR-10'
    made = np.random.default_rng(1)
    squared = np.fft.fftfreq(32)[:, None] ** 2 + np.fft.fftfreq(32)[None, :] ** 2
    labels = np.arange(6000) % 2
    noise = np.fft.fft2(made.standard_normal((6000, 3, 32, 32)))
    width = np.where(labels == 0, 1.0, 2.5)[:, None, None, None]
    fields = np.fft.ifft2(noise * np.exp(-(np.pi * width) ** 2 * squared)).real  # Gaussian smoothing
    fields /= fields.std(axis=(1, 2, 3), keepdims=True)
    images = np.round(127.5 * (1 + np.tanh(2 * fields))).astype(np.uint8).transpose(0, 2, 3, 1)
    return images[:4000], labels[:4000], images[4000:], labels[4000:], 2, 'made images'


x_train, y_train, x_test, y_test, classes, source = load_images()
mean, std = data.channel_stats(x_train)
print(f'data: {source}, {len(x_train)} training and {len(x_test)} test images')


def train(method, epochs=12):
    model = models.build('s_fc', 2, num_classes=classes)
    batches = data.Loader(x_train, y_train, 100, np, mean, std, train=True, policy=None, cutout=0)
    test = data.Loader(x_test, y_test, 500, np, mean, std, train=False, policy=None, cutout=0)
    groups = blasso.param_groups(model, 4e-4, 4e-5, verbose=False) if method == 'beta-LASSO' else None
    velocity, steps = {}, len(batches) * epochs
    report.add_filter_snapshot(model, OUT, 0, seed=0)
    for epoch in range(epochs):
        for step, (x, y) in enumerate(batches.epoch(epoch)):
            lr = 0.5 * (1.0 if groups else 0.1) * (1 + np.cos(np.pi * (epoch * len(batches) + step) / steps))
            loss, dlogits = models.softmax_cross_entropy(model.forward(x), y)
            model.backward(dlogits, need_dx=False)
            if groups:
                blasso.blasso_step(groups, lr, 50.0)
            else:
                blasso.sgd_step(model.params(), lr, 0.9, 5e-4, velocity)
        if epoch + 1 in (1, 3, epochs):
            report.add_filter_snapshot(model, OUT, epoch + 1, seed=0)
            maps = report.first_layer_maps(model, 32, 3)
            correct = sum(int((model.forward(x, train=False).argmax(1) == y).sum()) for x, y in test.epoch(0))
            print(f'{method:10s} epoch {epoch + 1:2d}: test accuracy {100 * correct / len(y_test):5.1f}%, '
                  f'layer-1 non-zeros {np.count_nonzero(maps):>9,}, locality {report.locality_score(maps) or 0:.2f}')
    os.replace(os.path.join(OUT, 'filters-over-time.png'), os.path.join(OUT, f'{method}.png'))
    os.remove(os.path.join(OUT, 'filter_history.npz'))
    return report.locality_score(report.first_layer_maps(model, 32, 3)) or 0.0


scores = {method: train(method) for method in ('SGD', 'beta-LASSO')}
print(f'locality of the first layer: SGD {scores["SGD"]:.2f}, beta-LASSO {scores["beta-LASSO"]:.2f}; '
      f'filters over time in {OUT}/SGD.png and {OUT}/beta-LASSO.png')
