"""Layers with handwritten forward and backward passes, and the paper's seven architectures.

Every layer is a small class with the same three methods (CS231n's layers, as objects):
    forward(x, train=True) -> out      saves on self what backward needs
    backward(dout) -> dx               overwrites the layer's gradient buffers, returns dx
    params() -> (name, param, grad)    every trainable array and its gradient buffer
Gradient buffers are allocated once, at construction, and written in place every step, so a
step allocates no weight-sized array and the (param, grad) pairs handed to the optimizer stay
valid for the whole run.

Arrays are NumPy or CuPy; one code path serves both (Chainer's get_array_module idiom, in
backend.py). Parameters are drawn on the CPU from a seeded numpy Generator and moved once with
to_device, so a seed gives the same network on either backend.
"""
import math

import numpy as np

from backend import fft_module, get_array_module


def leaves(layers):
    """Every layer that holds arrays, in order, looking inside residual blocks."""
    for layer in layers:
        if hasattr(layer, 'children'):
            yield from leaves(layer.children())
        else:
            yield layer


def to_device(model, xp):
    """Move every float array a layer holds (weights, gradient buffers, BN statistics) to xp."""
    for layer in leaves(model.layers):
        for key, value in vars(layer).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == 'f':
                setattr(layer, key, xp.asarray(value))
    return model


def he_normal(rng, shape, fan_in, dtype):
    """He/Kaiming init by fan-in: N(0, 2 / fan_in), drawn in the target dtype (no float64 copy)."""
    W = rng.standard_normal(shape, dtype=dtype)
    W *= math.sqrt(2.0 / fan_in)
    return W


def conv_out_size(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1


# ----------------------------------------------------------------------------- layers

class Linear:
    """Fully-connected layer. x: (N, D) -> out: (N, M) = x @ W + b, W: (D, M)."""

    def __init__(self, d_in, d_out, rng, bias=True, conv_like=False, dtype=np.float32):
        self.W = he_normal(rng, (d_in, d_out), d_in, dtype)
        self.dW = np.zeros_like(self.W)
        self.b = np.zeros(d_out, dtype) if bias else None
        self.db = np.zeros(d_out, dtype) if bias else None
        self.conv_like = conv_like  # gets lam_conv under beta-LASSO (blasso.param_groups)

    def forward(self, x, train=True):
        self.x = x
        out = x @ self.W
        if self.b is not None:
            out += self.b
        return out

    def backward(self, dout, need_dx=True):
        xp = get_array_module(dout)
        xp.matmul(self.x.T, dout, out=self.dW)
        if self.b is not None:
            dout.sum(axis=0, out=self.db)
        return dout @ self.W.T if need_dx else None

    def params(self):
        yield 'W', self.W, self.dW
        if self.b is not None:
            yield 'b', self.b, self.db

    def __repr__(self):
        return f'Linear({self.W.shape[0]}, {self.W.shape[1]}, bias={self.b is not None})'


def im2col(x, k, stride, pad):
    """x: (N, H, W, C) -> cols: (N, H', W', k, k, C), H' = (H + 2*pad - k) // stride + 1.

    Channels last: each row of a window is k*C inputs that sit together in memory, so the one
    copy below moves runs of k*C floats, not runs of k as channels first would (2-13x faster on
    the layers of the alpha-8 nets). Conv2d reads cols as one matrix (N*H'*W', k*k*C) and
    Local2d as one matrix (N, k*k*C) per position, both without a copy. The windows are a
    strided view of the padded input, copied once.
    """
    xp = get_array_module(x)
    n, h, w, c = x.shape
    h_out, w_out = conv_out_size(h, k, stride, pad), conv_out_size(w, k, stride, pad)
    x = xp.ascontiguousarray(xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x)
    s_n, s_h, s_w, s_c = x.strides
    windows = xp.lib.stride_tricks.as_strided(  # (N, H', W', k, k, C), a view of x
        x, (n, h_out, w_out, k, k, c), (s_n, s_h * stride, s_w * stride, s_h, s_w, s_c))
    return xp.ascontiguousarray(windows)


def col2im(cols, x_shape, k, stride, pad):
    """The adjoint of im2col: cols (N, H', W', k, k, C) -> dx (N, H, W, C), overlaps summed."""
    xp = get_array_module(cols)
    n, h, w, c = x_shape
    h_out, w_out = cols.shape[1:3]
    dx = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, i:i + stride * h_out:stride, j:j + stride * w_out:stride] += cols[:, :, :, i, j]
    return dx[:, pad:pad + h, pad:pad + w]


class ChannelsLast:
    """Images (N, C, H, W) -> (N, H, W, C), the layout the conv and local layers work in."""

    def forward(self, x, train=True):
        return get_array_module(x).ascontiguousarray(x.transpose(0, 2, 3, 1))

    def backward(self, dout):
        return get_array_module(dout).ascontiguousarray(dout.transpose(0, 3, 1, 2))

    def params(self):
        return ()

    def __repr__(self):
        return 'ChannelsLast()'


class Conv2d:
    """Convolution, one filter shared by every position.
    x: (N, H, W, C) -> out: (N, H', W', F), H' = (H + 2*pad - k) // stride + 1.
    W: (k*k*C, F), rows in im2col's (k, k, C) order; the same layout as one position of
    Local2d's weights.
    """

    def __init__(self, c_in, c_out, k, stride, pad, rng, conv_like=True, dtype=np.float32):
        self.k, self.stride, self.pad = k, stride, pad
        self.W = he_normal(rng, (k * k * c_in, c_out), c_in * k * k, dtype)
        self.dW = np.zeros_like(self.W)
        self.conv_like = conv_like

    def forward(self, x, train=True):
        self.x_shape = x.shape
        self.cols = im2col(x, self.k, self.stride, self.pad)  # (N, H', W', k, k, C)
        n, h_out, w_out = self.cols.shape[:3]
        out = self.cols.reshape(-1, self.W.shape[0]) @ self.W  # (N*H'*W', F)
        return out.reshape(n, h_out, w_out, -1)

    def backward(self, dout, need_dx=True):
        xp = get_array_module(dout)
        kkc, f = self.W.shape
        k, c = self.k, kkc // self.k ** 2
        dout_rows = dout.reshape(-1, f)  # (N*H'*W', F)
        xp.matmul(self.cols.reshape(-1, kkc).T, dout_rows, out=self.dW)
        if not need_dx:
            return None
        if self.stride == 1 and self.pad < k:
            # A stride-1 convolution's input gradient is a convolution too: of dout padded by
            # k-1-pad, with the kernel flipped and its channels swapped. One im2col and one matmul
            # instead of col2im's k*k scatter-adds: 3-7x faster on D-CONV's stride-1 layers at
            # alpha 8. (With stride 2 the same trick needs a zero-dilated dout, which costs more.)
            flipped = self.W.reshape(k, k, c, f)[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * f, c)
            cols = im2col(dout, k, 1, k - 1 - self.pad)  # (N, H, W, k, k, F)
            return (cols.reshape(-1, k * k * f) @ flipped).reshape(self.x_shape)  # (N, H, W, C)
        dcols = (dout_rows @ self.W.T).reshape(self.cols.shape)  # (N, H', W', k, k, C)
        return col2im(dcols, self.x_shape, k, self.stride, self.pad)

    def params(self):
        yield 'W', self.W, self.dW

    def __repr__(self):
        kkc, f = self.W.shape
        return f'Conv2d({kkc // self.k ** 2}, {f}, k={self.k}, stride={self.stride}, pad={self.pad})'


def fft_size(n):
    """The smallest 2^a 3^b 5^c >= n: the lengths whose FFTs are fast."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class FFTConv2d(Conv2d):
    """Conv2d computed through the FFT: the same weights, output and gradients, at a cost that
    does not grow with k*k. By the convolution theorem a correlation in space is a product in
    frequency, and summing over channels makes it one (N, C) @ (C, F) product per frequency.
    conv2d() picks it for large kernels.

    Both the padded input and the kernel are transformed at size L >= H + 2*pad (fft_size). No
    product wraps around at that size: out[y] reads xpad[y .. y+k-1], all below H + 2*pad.
    A stride-s layer computes the stride-1 output and keeps every s-th row and column.
    Spectra are (N, L, L', C) with L' = L // 2 + 1 (rfft2 keeps half of a real map's spectrum);
    the products run with the frequencies first (by_frequency), one batched matmul each.
    """

    def forward(self, x, train=True):
        xp, fft = get_array_module(x), fft_module(x)
        n, h, w, c = x.shape
        k, s, p, f = self.k, self.stride, self.pad, self.W.shape[1]
        self.x_shape = x.shape
        self.size = (fft_size(h + 2 * p), fft_size(w + 2 * p))
        xpad = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        self.X = fft.rfft2(xpad, s=self.size, axes=(1, 2))  # (N, L, L', C)
        self.Wf = fft.rfft2(self.W.reshape(k, k, c, f), s=self.size, axes=(0, 1)).reshape(-1, c, f)  # (L*L', C, F)
        # out[y] = sum_i xpad[y + i] W[i], a correlation: X times the conjugate of W's spectrum
        Z = by_image(by_frequency(self.X) @ self.Wf.conj(), self.X.shape[:3] + (f,))  # (N, L, L', F)
        z = fft.irfft2(Z, s=self.size, axes=(1, 2))  # (N, L, L, F): every stride-1 position and more
        h_out, w_out = conv_out_size(h, k, s, p), conv_out_size(w, k, s, p)
        return xp.ascontiguousarray(z[:, :s * h_out:s, :s * w_out:s], dtype=x.dtype)

    def backward(self, dout, need_dx=True):
        xp, fft = get_array_module(dout), fft_module(dout)
        n, h, w, c = self.x_shape
        k, s, p = self.k, self.stride, self.pad
        f, h_out, w_out = dout.shape[3], dout.shape[1], dout.shape[2]
        dz = dout  # the gradient of the stride-1 output z: dout at every s-th position, 0 between
        if s > 1:
            dz = xp.zeros((n, s * h_out, s * w_out, f), dout.dtype)
            dz[:, ::s, ::s] = dout
        DZ = fft.rfft2(dz, s=self.size, axes=(1, 2))  # (N, L, L', F)
        # dW[i] = sum_y xpad[y + i] dz[y], summed over images: a correlation again
        G = by_frequency(self.X).transpose(0, 2, 1) @ by_frequency(DZ).conj()  # (L*L', C, F)
        dW = fft.irfft2(G.reshape(DZ.shape[1:3] + (c, f)), s=self.size, axes=(0, 1))  # (L, L, C, F)
        self.dW[...] = dW[:k, :k].reshape(k * k * c, f)
        if not need_dx:
            return None
        # dxpad[y'] = sum_i dz[y' - i] W[i]: a convolution, so W's spectrum unconjugated
        DX = by_image(by_frequency(DZ) @ self.Wf.transpose(0, 2, 1), DZ.shape[:3] + (c,))  # (N, L, L', C)
        dxpad = fft.irfft2(DX, s=self.size, axes=(1, 2))  # (N, L, L, C)
        return xp.ascontiguousarray(dxpad[:, p:p + h, p:p + w], dtype=dout.dtype)

    def __repr__(self):
        return 'FFT' + super().__repr__()


class BandConv2d(Conv2d):
    """Conv2d computed a tile of t neighbouring output positions of a row at a time: the same
    weights, output and gradients. im2col copies k*k*C inputs for every output position; the t
    windows of a tile lie inside one k x span window of the input, span = (t-1)*stride + k
    columns, so one copy of that window serves all t. The weights become a banded
    (block-Toeplitz) matrix that maps the window to the tile's t*F outputs: weight W[i, j] of
    the tile's q-th output sits at row i, column q*stride + j of the window.
    The product does span/k times im2col's arithmetic, but its copy is span/(k*t) of im2col's (a
    third for S-CONV's first layer) and its matrix has t*F columns instead of F. OpenBLAS runs
    an F-column product far below its peak, and for layers of few channels the wider product
    more than pays for the extra arithmetic: on 2 cores S-CONV's first layer takes 6.3 ms a step
    this way against 12.5 by im2col, and D-CONV's convolutions 39.7 against 53.5
    (`python bench.py --conv-shapes`, docs/speed.md). conv2d() picks it for thin layers (32 or
    fewer output channels) and strided ones, except the 1x1 ones and those it gives the FFT.

    cols: (N*H'*tiles, k*span*C), tiles = ceil(W'/t); where t does not divide W', the last tile's
    extra outputs are computed and dropped. W_band: (k*span*C, t*F).
    """

    def __init__(self, c_in, c_out, k, stride, pad, rng, tile=8, dtype=np.float32):
        super().__init__(c_in, c_out, k, stride, pad, rng, dtype=dtype)
        self.tile = tile

    def forward(self, x, train=True):
        self.x_shape = x.shape
        out, self.cols, self.W_band = band_conv(x, self.W, self.k, self.stride, self.pad, self.tile)
        return out

    def backward(self, dout, need_dx=True):
        xp = get_array_module(dout)
        n, h, w, c = self.x_shape
        k, s, p, t, f = self.k, self.stride, self.pad, self.tile, self.W.shape[1]
        h_out, w_out, tiles, span, right = band_shape(h, w, k, s, p, t)
        if tiles * t != w_out:  # the dropped columns of the last tile had no gradient
            dout = xp.pad(dout, ((0, 0), (0, 0), (0, tiles * t - w_out), (0, 0)))
        dout_tiles = dout.reshape(-1, t * f)  # (N*H'*tiles, t*F)
        # the same product as cols.T @ dout_tiles, in the order OpenBLAS runs faster when t*F is small
        d_band = (dout_tiles.T @ self.cols).T.reshape(k, span, c, t, f)
        dW = self.dW.reshape(k, k, c, f)
        dW[...] = 0
        for q in range(t):  # each tap's weight sits at t places in the band
            dW += d_band[:, q * s:q * s + k, :, q, :]
        if not need_dx:
            return None
        if s == 1 and p < k:  # as in Conv2d: a convolution of dout with the flipped kernel, by bands too
            flipped = self.W.reshape(k, k, c, f)[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * f, c)
            return band_conv(dout[:, :, :w_out], flipped, k, 1, k - 1 - p, max(64 // c, 1))[0]
        # otherwise the adjoint of the window copy: each tile's band gradient added back where the
        # band was read, whole rows of span*C floats at a time (col2im's adds run along C floats)
        dcols = (dout_tiles @ self.W_band.T).reshape(n, h_out, tiles, k, span * c)
        dxpad = xp.zeros((n, h + 2 * p, p + w + right, c), dout.dtype)
        s_n, s_h, s_w, s_c = dxpad.strides
        m = -(-span // (t * s))  # neighbouring tiles' windows overlap: add every m-th tile at once
        for r in range(m):
            group = dcols[:, :, r::m]
            for i in range(k):
                target = xp.lib.stride_tricks.as_strided(  # rows i, i+s, ... of tiles r, r+m, ...
                    dxpad[:, i:, r * t * s:], group.shape[:3] + (span * c,), (s_n, s_h * s, s_w * s * t * m, s_c))
                target += group[:, :, :, i]
        return dxpad[:, p:p + h, p:p + w]

    def __repr__(self):
        return f'Band{super().__repr__()[:-1]}, tile={self.tile})'


def band_shape(h, w, k, stride, pad, tile):
    """A band convolution's output size, tiles per row, window span, and the zero columns the last
    tile reads past the image's right edge."""
    h_out, w_out = conv_out_size(h, k, stride, pad), conv_out_size(w, k, stride, pad)
    tiles = -(-w_out // tile)
    span = (tile - 1) * stride + k
    right = max((tiles * tile - 1) * stride + k - w - pad, 0)
    return h_out, w_out, tiles, span, right


def band_conv(x, W, k, stride, pad, tile):
    """x (N, H, W, C) convolved with W (k*k*C, F) by bands: out (N, H', W', F), and the two
    factors of its product, cols (N*H'*tiles, k*span*C) and W_band (k*span*C, tile*F)."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    f, s, t = W.shape[1], stride, tile
    h_out, w_out, tiles, span, right = band_shape(h, w, k, s, pad, t)
    xpad = xp.ascontiguousarray(xp.pad(x, ((0, 0), (pad, pad), (pad, right), (0, 0))))
    s_n, s_h, s_w, s_c = xpad.strides
    windows = xp.lib.stride_tricks.as_strided(  # (N, H', tiles, k, span*C), a view of xpad
        xpad, (n, h_out, tiles, k, span * c), (s_n, s_h * s, s_w * s * t, s_h, s_c))
    cols = xp.ascontiguousarray(windows).reshape(n * h_out * tiles, k * span * c)
    W_band = xp.zeros((k, span, c, t, f), W.dtype)
    for q in range(t):
        W_band[:, q * s:q * s + k, :, q, :] = W.reshape(k, k, c, f)
    W_band = W_band.reshape(k * span * c, t * f)
    out = (cols @ W_band).reshape(n, h_out, tiles * t, f)
    return (out if tiles * t == w_out else xp.ascontiguousarray(out[:, :, :w_out])), cols, W_band


def conv2d(c_in, c_out, k, stride, pad, size, rng, dtype=np.float32, first=False):
    """A k x k convolution of size x size images, computed by Conv2d (im2col), BandConv2d or
    FFTConv2d, whichever this rule expects to be fastest; all three hold the same weights in the
    same layout. first: the net's first layer, which needs no input gradient.

    Bands for thin layers (32 or fewer output channels) and strided ones, in tiles of
    t = 64 // F output positions, so that the band matrix has t*F = 64 columns (or just under,
    where F does not divide 64; a tile of one position where F > 32, whose gain is the input
    gradient's row-wise adds); not for a 1x1 convolution, whose band would be mostly zeros.
    The FFT for large kernels: the rule weighs what grows with k*k in im2col, the size of its
    copy (H' * W' * k*k values per image and channel), against the FFT's spectra (L * L), and
    takes the FFT where the copy is 10 or more times larger. The FFT has to beat the bands by
    more where they skip work it does: a strided layer's FFT computes every stride-1 output and
    keeps one in stride**2 (20 or more), and a first layer needs no input gradient (64 or more
    against the bands, 16 against im2col, which skips its costliest step there: col2im, or the
    second im2col). im2col for the rest. The thresholds were read off `python bench.py
    --conv-shapes` on a 2-core CPU (docs/speed.md).
    """
    h_out = conv_out_size(size, k, stride, pad)
    growth = h_out * h_out * k * k / fft_size(size + 2 * pad) ** 2
    banded = k > 1 and (c_out <= 32 or stride > 1)
    if banded:
        fft_from = 64 if first else 20 if stride > 1 else 10
    else:
        fft_from = 16 if first else 10
    if growth >= fft_from:
        return FFTConv2d(c_in, c_out, k, stride, pad, rng, dtype=dtype)
    if banded:
        return BandConv2d(c_in, c_out, k, stride, pad, rng, tile=max(64 // c_out, 1), dtype=dtype)
    return Conv2d(c_in, c_out, k, stride, pad, rng, dtype=dtype)


def by_frequency(spectra):
    """(N, L, L', K) -> (L*L', N, K), a view: one (N, K) matrix per frequency, for batched products."""
    return spectra.reshape(spectra.shape[0], -1, spectra.shape[-1]).transpose(1, 0, 2)


def by_image(products, shape):
    """by_frequency's inverse: (L*L', N, K) -> shape (N, L, L', K)."""
    return products.transpose(1, 0, 2).reshape(shape)


class Local2d:
    """Locally connected layer: Conv2d's geometry and columns, but its own filter at every output
    position. x: (N, H, W, C) -> out: (N, H', W', F), H' = (H + 2*pad - k) // stride + 1.
    W: (P, k*k*C, F) with P = H'*W' positions. Where Conv2d multiplies all columns by one
    (k*k*C, F) filter, Local2d multiplies each position's N columns by that position's filter:
    one batched matrix product over the P positions.

    The products read the columns as (P, N, k*k*C), a view of im2col's (N, P, k*k*C). NumPy hands
    such strided matrices to BLAS as they are. CuPy's batched matmul copies an operand that is
    not C-contiguous (cupy/_core/_routines_linalg.pyx), so on a GPU each product pays one copy of
    its columns: the price of one layout for both backends.
    """

    def __init__(self, c_in, c_out, k, stride, pad, h, w, rng, conv_like=True, dtype=np.float32):
        self.k, self.stride, self.pad = k, stride, pad
        positions = conv_out_size(h, k, stride, pad) * conv_out_size(w, k, stride, pad)
        self.W = he_normal(rng, (positions, k * k * c_in, c_out), c_in * k * k, dtype)
        self.dW = np.zeros_like(self.W)
        self.conv_like = conv_like

    def forward(self, x, train=True):
        xp = get_array_module(x)
        p, kkc, f = self.W.shape
        self.x_shape = x.shape
        self.cols = im2col(x, self.k, self.stride, self.pad)  # (N, H', W', k, k, C)
        n, h_out, w_out = self.cols.shape[:3]
        cols = self.cols.reshape(n, p, kkc).transpose(1, 0, 2)  # (P, N, kkC), a view
        out = xp.matmul(cols, self.W)  # (P, N, kkC) @ (P, kkC, F) -> (P, N, F)
        return xp.ascontiguousarray(out.transpose(1, 0, 2)).reshape(n, h_out, w_out, f)  # (N, H', W', F)

    def backward(self, dout, need_dx=True):
        xp = get_array_module(dout)
        p, kkc, f = self.W.shape
        n, h_out, w_out = self.cols.shape[:3]
        cols = self.cols.reshape(n, p, kkc).transpose(1, 0, 2)  # (P, N, kkC), a view
        dout = dout.reshape(n, p, f).transpose(1, 0, 2)  # (P, N, F), a view
        xp.matmul(cols.transpose(0, 2, 1), dout, out=self.dW)  # (P, kkC, N) @ (P, N, F)
        if not need_dx:
            return None
        dcols = xp.matmul(dout, self.W.transpose(0, 2, 1))  # (P, N, F) @ (P, F, kkC) -> (P, N, kkC)
        dcols = dcols.reshape(h_out, w_out, n, self.k, self.k, -1).transpose(2, 0, 1, 3, 4, 5)  # (N, H', W', k, k, C), a view
        return col2im(dcols, self.x_shape, self.k, self.stride, self.pad)

    def params(self):
        yield 'W', self.W, self.dW

    def __repr__(self):
        p, kkc, f = self.W.shape
        return f'Local2d({kkc // self.k ** 2}, {f}, k={self.k}, stride={self.stride}, pad={self.pad}, positions={p})'


class BatchNorm:
    """Batch normalisation per feature, the last axis, over all other axes.
    x: (N, F) or (N, H, W, F) -> same shape. Batch statistics in training, running statistics
    in evaluation; momentum 0.1, eps 1e-5 and an unbiased running variance, as PyTorch.

    The arithmetic runs on x as rows (N, H*W*F) against per-feature vectors tiled to a row's
    length, so that every NumPy loop runs along a whole row rather than along F features: on
    (N*H*W, F) against the (F,) vectors themselves, the alpha-8 conv and local nets step 10-20%
    slower (8 features; bench.py with each form, 2 cores). On a GPU the tiles cost a small kernel
    each. For (N, F) tiling is a no-op.
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32):
        self.gamma, self.beta = np.ones(num_features, dtype), np.zeros(num_features, dtype)
        self.dgamma, self.dbeta = np.zeros(num_features, dtype), np.zeros(num_features, dtype)
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.momentum, self.eps = momentum, eps

    def _feature_sum(self, rows):
        """rows (N, H*W*F) -> (F,): the sum over everything but the feature."""
        return rows.sum(axis=0).reshape(-1, self.gamma.size).sum(axis=0)

    def _tiled(self, v):
        """(F,) -> (H*W*F,): the feature vector repeated along a row."""
        return get_array_module(v).tile(v, self.row_length // v.size)

    def forward(self, x, train=True):
        self.shape, self.row_length = x.shape, x[0].size
        rows = x.reshape(x.shape[0], -1)  # (N, H*W*F)
        self.count = x.size // x.shape[-1]  # values per feature: N*H*W
        if train:
            mean = self._feature_sum(rows) / self.count
            centred = rows - self._tiled(mean)
            var = self._feature_sum(centred * centred) / self.count
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += m * self.count / max(self.count - 1, 1) * var
        else:
            var = self.running_var
            centred = rows - self._tiled(self.running_mean)
        self.rstd = 1 / (var + self.eps) ** 0.5  # (F,)
        # in place where the array is this layer's own: BatchNorm's time goes to its passes over
        # the activations, not to its arithmetic, and each new array is one more pass
        self.xhat = centred  # (N, H*W*F)
        self.xhat *= self._tiled(self.rstd)
        out = self.xhat * self._tiled(self.gamma)
        out += self._tiled(self.beta)
        return out.reshape(self.shape)

    def backward(self, dout):
        rows = dout.reshape(dout.shape[0], -1)  # (N, H*W*F)
        self.dgamma[...] = self._feature_sum(rows * self.xhat)
        self.dbeta[...] = self._feature_sum(rows)
        # the compact form of dx: mean(dxhat) = gamma*dbeta/n, mean(dxhat*xhat) = gamma*dgamma/n
        n = self.count
        dx = rows - self._tiled(self.dbeta / n)
        dx -= self.xhat * self._tiled(self.dgamma / n)
        dx *= self._tiled(self.gamma * self.rstd)
        return dx.reshape(self.shape)

    def params(self):
        yield 'gamma', self.gamma, self.dgamma
        yield 'beta', self.beta, self.dbeta

    def buffers(self):
        yield 'running_mean', self.running_mean
        yield 'running_var', self.running_var

    def __repr__(self):
        return f'BatchNorm({self.gamma.size})'


class ReLU:
    """x: any shape -> max(x, 0), same shape."""

    def forward(self, x, train=True):
        xp = get_array_module(x)
        self.mask = x > 0
        return xp.maximum(x, 0)

    def backward(self, dout):
        return dout * self.mask

    def params(self):
        return ()

    def __repr__(self):
        return 'ReLU()'


class Flatten:
    """x: (N, C, H, W) or (N, H, W, C) -> (N, C*H*W) or (N, H*W*C), a view when it can be."""

    def forward(self, x, train=True):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.shape)

    def params(self):
        return ()

    def __repr__(self):
        return 'Flatten()'


def splitmix64(z):
    """splitmix64's output function (Steele, Lea & Flood 2014) on uint64 arrays, elementwise."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_bits(shape, key, xp):
    """64 random bits per element, counter-based: splitmix64(start + (i + 1) * golden gamma) for
    element i, start = splitmix64(key). No generator object, so nothing to create per call or to
    checkpoint, and the same bits on NumPy and CuPy (uint64 products wrap on both). The key is
    mixed first: keys k and k + 1 would otherwise give one stream shifted by an element."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    start = splitmix64(xp.full(1, key % 2 ** 64, dtype=np.uint64))
    return splitmix64(start + xp.arange(1, math.prod(shape) + 1, dtype=np.uint64) * gamma).reshape(shape)


class Dropout:
    """Inverted dropout: zero each unit with probability p in training, scale the rest by 1/(1-p).
    The mask comes from uniform_bits keyed by (seed, number of calls): one layer's masks are a
    function of where the run is, identical on NumPy and CuPy, and a resumed run draws the same
    masks (the call count is a buffer and travels with checkpoints).
    """

    def __init__(self, p, seed=0):
        self.p, self.seed = p, seed
        self.calls = np.zeros(1, np.int64)

    def forward(self, x, train=True):
        if not train or self.p == 0:
            self.mask = None
            return x
        xp = get_array_module(x)
        bits = uniform_bits(x.shape, (self.seed << 32) + int(self.calls[0]), xp)
        self.calls += 1
        keep = (bits >> np.uint64(40)) >= np.uint64(round(self.p * 2 ** 24))  # top 24 bits: P = 1 - p
        self.mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask

    def params(self):
        return ()

    def buffers(self):
        yield 'calls', self.calls

    def __repr__(self):
        return f'Dropout({self.p})'


class Residual:
    """ResNet's basic block (He et al. 2016): out = relu(branch(x) + shortcut(x)), the branch
    conv-BN-ReLU-conv-BN with k x k kernels, the shortcut the identity or, where the shape
    changes, a 1x1 stride-s convolution and BN. x: (N, H, W, C) -> (N, H', W', F), H' = H / s.
    """

    def __init__(self, c_in, c_out, stride, k, size, rng, dtype=np.float32):
        size_out = conv_out_size(size, k, stride, k // 2)  # size: the input's height and width
        self.branch = Sequential([conv2d(c_in, c_out, k, stride, k // 2, size, rng, dtype), BatchNorm(c_out, dtype=dtype), ReLU(),
                                  conv2d(c_out, c_out, k, 1, k // 2, size_out, rng, dtype), BatchNorm(c_out, dtype=dtype)])
        self.shortcut = None if stride == 1 and c_in == c_out else Sequential(
            [Conv2d(c_in, c_out, 1, stride, 0, rng, dtype=dtype), BatchNorm(c_out, dtype=dtype)])
        self.relu = ReLU()

    def forward(self, x, train=True):
        out = self.branch.forward(x, train)
        out += self.shortcut.forward(x, train) if self.shortcut else x
        return self.relu.forward(out, train)

    def backward(self, dout):
        dsum = self.relu.backward(dout)  # reaches both paths unchanged
        dx = self.branch.backward(dsum)
        dx += self.shortcut.backward(dsum) if self.shortcut else dsum  # where x split, its gradients add
        return dx

    def children(self):
        return self.branch.layers + (self.shortcut.layers if self.shortcut else [])

    def params(self):
        for prefix, path in (('branch', self.branch), ('shortcut', self.shortcut)):
            for name, p, g in path.params() if path else ():
                yield f'{prefix}.{name}', p, g

    def buffers(self):
        for prefix, path in (('branch', self.branch), ('shortcut', self.shortcut)):
            for name, b in path.buffers() if path else ():
                yield f'{prefix}.{name}', b

    def __repr__(self):
        return f'Residual({self.branch.layers[0]!r} -> {self.branch.layers[3]!r}, shortcut={self.shortcut is not None})'


class GlobalAvgPool:
    """x: (N, H, W, C) -> (N, C), the mean over positions."""

    def forward(self, x, train=True):
        self.shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dout):
        n, h, w, c = self.shape
        return get_array_module(dout).broadcast_to((dout / (h * w))[:, None, None, :], self.shape).copy()

    def params(self):
        return ()

    def __repr__(self):
        return 'GlobalAvgPool()'


def softmax_cross_entropy(logits, y):
    """logits: (N, K), y: (N,) ints -> (mean loss as a 0-d array, dlogits (N, K))."""
    xp = get_array_module(logits)
    n = logits.shape[0]
    rows = xp.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)  # max-shift: exp never overflows
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dlogits = xp.exp(log_probs)
    dlogits[rows, y] -= 1
    dlogits /= n
    return loss, dlogits


class Sequential:
    """A list of layers run in order; backward runs them in reverse."""

    def __init__(self, layers):
        self.layers = layers

    def forward(self, x, train=True):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dout, need_dx=True):
        """dout: dL/dlogits -> dL/dx. With need_dx=False the first weight layer skips its input
        gradient (for S-FC at batch 512 that is a third of the first layer's backward)."""
        first = next(i for i, layer in enumerate(self.layers) if any(True for _ in layer.params()))
        for i in range(len(self.layers) - 1, -1, -1):
            if i == first and not need_dx:
                self.layers[i].backward(dout, need_dx=False)
                return None
            dout = self.layers[i].backward(dout)
        return dout

    def params(self):
        for i, layer in enumerate(self.layers):
            for name, p, g in layer.params():
                yield f'{i}.{name}', p, g

    def buffers(self):
        for i, layer in enumerate(self.layers):
            for name, b in getattr(layer, 'buffers', tuple)():
                yield f'{i}.{name}', b

    def num_params(self):
        return sum(p.size for _, p, _ in self.params())

    def __repr__(self):
        lines = [f'  ({i}) {layer!r}' for i, layer in enumerate(self.layers)]
        return 'Sequential(\n' + '\n'.join(lines) + f'\n)  # {self.num_params():,} parameters'


def macs_per_image(model, in_channels=3, image_size=32):
    """Multiply-adds of the linear, conv and local layers for one image (forward flops / 2).
    A training step costs about 3x this per image: forward, weight gradient, input gradient."""
    xp = get_array_module(model.layers[-1].W)
    model.forward(xp.zeros((1, in_channels, image_size, image_size), model.layers[-1].W.dtype), train=False)
    return sum(layer_macs(layer) for layer in leaves(model.layers))


def layer_macs(layer):
    """One layer's multiply-adds per image, from the input shape its last forward saw."""
    if isinstance(layer, Conv2d):  # each weight is used at every output position
        n, h, w, c = layer.x_shape
        return layer.W.size * conv_out_size(h, layer.k, layer.stride, layer.pad) * conv_out_size(w, layer.k, layer.stride, layer.pad)
    if isinstance(layer, (Linear, Local2d)):  # each weight is used once
        return layer.W.size
    return 0


# ----------------------------------------------------------------------------- architectures
# Paper Fig. 1 and Tables 3/4. Every weight layer but the last is followed by batch-norm and
# ReLU, so it carries no bias; the last layer does. "Same" padding, no pooling anywhere.
# Dropout, when asked for, goes on the inputs of the last two FC layers (paper App. A.2).
# Models take images (N, C, H, W); conv and local nets turn them channels-last first.

D_CONV_PLAN = [(1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2)]  # (channels/alpha, stride)


def _bn_relu(layer, num_features, dtype):
    return [layer, BatchNorm(num_features, dtype=dtype), ReLU()]


def _head(d_in, hidden, num_classes, rng, dropout, seed, dtype):
    """FC(hidden) + BN + ReLU, then FC(num_classes) with bias; dropout before each if asked."""
    drop = (lambda i: [Dropout(dropout, seed + i)]) if dropout else (lambda i: [])
    return (drop(0) + _bn_relu(Linear(d_in, hidden, rng, bias=False, dtype=dtype), hidden, dtype)
            + drop(1) + [Linear(hidden, num_classes, rng, dtype=dtype)])


def _shallow(kind, alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype):
    """S-CONV / S-LOCAL / S-FC: a 9x9 stride-2 layer of alpha channels (or its LOCAL / FC
    counterpart), then FC(24*alpha), then FC(num_classes)."""
    s, c = image_size, in_channels
    h = conv_out_size(s, 9, 2, 4)  # 16 at s = 32
    units = alpha * h * h
    if kind == 'conv':
        first = [ChannelsLast(), conv2d(c, alpha, 9, 2, 4, s, rng, dtype=dtype, first=True)]
    elif kind == 'local':
        first = [ChannelsLast(), Local2d(c, alpha, 9, 2, 4, s, s, rng, dtype=dtype)]
    else:  # the FC counterpart has exactly as many units as the conv's output map
        first = [Flatten(), Linear(c * s * s, units, rng, bias=False, conv_like=True, dtype=dtype)]
    bn = BatchNorm(units if kind == 'fc' else alpha, dtype=dtype)
    tail = [] if kind == 'fc' else [Flatten()]
    return Sequential(first + [bn, ReLU()] + tail
                      + _head(units, 24 * alpha, num_classes, rng, dropout, seed, dtype))


def _deep(kind, alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype):
    """D-CONV / D-LOCAL / D-FC: eight 3x3 layers (D_CONV_PLAN, or their LOCAL / FC
    counterparts), then FC(64*alpha), then FC(num_classes)."""
    layers = [Flatten()] if kind == 'fc' else [ChannelsLast()]
    c, h = in_channels, image_size
    for i, (mult, stride) in enumerate(D_CONV_PLAN):
        c_out, h_out = mult * alpha, conv_out_size(h, 3, stride, 1)
        if kind == 'conv':
            layer, features = conv2d(c, c_out, 3, stride, 1, h, rng, dtype=dtype, first=i == 0), c_out
        elif kind == 'local':
            layer, features = Local2d(c, c_out, 3, stride, 1, h, h, rng, dtype=dtype), c_out
        else:
            layer = Linear(c * h * h, c_out * h_out * h_out, rng, bias=False, conv_like=True, dtype=dtype)
            features = c_out * h_out * h_out
        layers += _bn_relu(layer, features, dtype)
        c, h = c_out, h_out
    if kind != 'fc':
        layers.append(Flatten())
    return Sequential(layers + _head(c * h * h, 64 * alpha, num_classes, rng, dropout, seed, dtype))


def s_conv(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0, dtype=np.float32):
    """S-CONV (Fig. 1, Table 4): 6s²α² + (243 + 24c)α weights."""
    return _shallow('conv', alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype)


def s_local(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0, dtype=np.float32):
    """S-LOCAL (Table 4): 6s²α² + (243s²/4 + 24c)α weights."""
    return _shallow('local', alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype)


def s_fc(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0, dtype=np.float32):
    """S-FC (Table 4): 3s² -> αs²/4 -> 24α -> c, 6s²α² + (3s⁴/4 + 24c)α weights."""
    return _shallow('fc', alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype)


def d_conv(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0, dtype=np.float32):
    """D-CONV (Fig. 1, Table 3): conv_k has 9·2^(k-1)α² weights (conv1 27α), fc1 4s²α²,
    fc2 64cα; in all 2286α² + 4s²α² + (27 + 64c)α, the paper's ≈ (9·2⁸ + 4s²)α² + (27 + 64c)α."""
    return _deep('conv', alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype)


def d_local(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0, dtype=np.float32):
    """D-LOCAL: a true locally connected D-CONV, 9·c_in·c_out weights at each output position:
    45s²α² + 4s²α² + (27s² + 64c)α ≈ 11.7M at α=15. The paper's Table 3 column (13s²α², 3.42M)
    counts conv2..8 as 9s²α²/2^(k-1), which no locally connected layer with this geometry has;
    we build the real thing."""
    return _deep('local', alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype)


def d_fc(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0, dtype=np.float32):
    """D-FC (Table 3): every conv replaced by a dense layer with as many units as its output
    map; conv1 3s⁴α, conv_k s⁴α²/2^(k-1), fc1 4s²α², fc2 64cα."""
    return _deep('fc', alpha, num_classes, image_size, in_channels, rng, dropout, seed, dtype)


def three_fc(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0,
             dtype=np.float32, width=None):
    """3-FC (App. A.1): two hidden layers of `width` units. The default width gives it as many
    weights as S-FC at this alpha (≈ 14.5k units at α=150)."""
    d_in = in_channels * image_size * image_size
    width = width or three_fc_width(alpha, num_classes, image_size, in_channels)
    first = _bn_relu(Linear(d_in, width, rng, bias=False, dtype=dtype), width, dtype)
    return Sequential([Flatten()] + first + _head(width, width, num_classes, rng, dropout, seed, dtype))


def resnet18(alpha, num_classes=10, image_size=32, in_channels=3, rng=None, dropout=0.0, seed=0,
             dtype=np.float32, kernel_size=3):
    """ResNet18 (App. A.1): the ImageNet ResNet18 (He et al. 2016) with a 3x3 first convolution
    and no max-pooling, alpha the base width (64 in the original), every 3x3 convolution (the
    first one too) k x k with padding k // 2 (Fig. 5). Stages of 2 blocks at alpha, 2, 4, 8 alpha,
    the last three starting with stride 2; global average pooling; FC(num_classes).
    At alpha 64, k 3, 10 classes: 11,173,962 parameters (BN and the last bias included)."""
    k = kernel_size
    layers = [ChannelsLast(), conv2d(in_channels, alpha, k, 1, k // 2, image_size, rng, dtype, first=True),
              BatchNorm(alpha, dtype=dtype), ReLU()]
    c, size = alpha, image_size
    for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
        layers += [Residual(c, mult * alpha, stride, k, size, rng, dtype)]
        c, size = mult * alpha, conv_out_size(size, k, stride, k // 2)
        layers += [Residual(c, c, 1, k, size, rng, dtype)]
    return Sequential(layers + [GlobalAvgPool()] + ([Dropout(dropout, seed)] if dropout else [])
                      + [Linear(c, num_classes, rng, dtype=dtype)])


def three_fc_width(alpha, num_classes=10, image_size=32, in_channels=3):
    """3-FC's hidden width with as many weights as S-FC at alpha: width² + (d_in + c)·width = S-FC's."""
    b = in_channels * image_size * image_size + num_classes
    target = s_fc_num_weights(alpha, num_classes, image_size, in_channels)
    return round((-b + math.sqrt(b * b + 4 * target)) / 2)


def s_fc_num_weights(alpha, num_classes=10, image_size=32, in_channels=3):
    """S-FC's weight count, 6s²α² + (3s⁴/4 + 24c)α at s = 32, without building it."""
    units = alpha * conv_out_size(image_size, 9, 2, 4) ** 2
    return in_channels * image_size ** 2 * units + units * 24 * alpha + 24 * alpha * num_classes


ARCHS = {'d_conv': d_conv, 'd_local': d_local, 'd_fc': d_fc,
         's_conv': s_conv, 's_local': s_local, 's_fc': s_fc, 'three_fc': three_fc, 'resnet18': resnet18}


def build(arch, alpha, num_classes=10, image_size=32, in_channels=3, seed=0, width=None,
          dtype='float32', dropout=0.0, kernel_size=3):
    """The one entry point: a NumPy model of `arch` at base width `alpha` (move it with to_device).
    Returns a Sequential with forward(x (N, C, H, W)) -> logits, backward, params, num_params."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, np.integer)) or alpha <= 0:
        raise ValueError(f'alpha must be a positive integer (the base channel count), got {alpha!r}')
    if width is not None and (not isinstance(width, (int, np.integer)) or width <= 0):
        raise ValueError(f'width must be a positive integer, got {width!r}')
    if not 0 <= dropout < 1:
        raise ValueError(f'dropout must be in [0, 1), got {dropout!r}')
    if not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be an odd positive integer, got {kernel_size!r}')
    rng = np.random.default_rng(seed)
    kwargs = dict(num_classes=num_classes, image_size=image_size, in_channels=in_channels, rng=rng,
                  dropout=dropout, seed=seed, dtype=np.dtype(dtype))
    if arch == 'three_fc':
        return three_fc(int(alpha), width=width, **kwargs)
    if arch == 'resnet18':
        return resnet18(int(alpha), kernel_size=int(kernel_size), **kwargs)
    return ARCHS[arch](int(alpha), **kwargs)
