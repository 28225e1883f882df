"""The learned sparsity put to use: a compact model file, and inference that multiplies only the
weights beta-LASSO kept (the paper's stated future work).

    python export.py runs/s_fc-blasso-a8           # write model.npz beside the checkpoint; sizes per layer
    python export.py runs/s_fc-blasso-a8 --eval    # and run the test set through it: the same predictions

model.npz holds every weight matrix that is smaller that way in CSR (float32 values, int32
column indices, int32 row pointers; one row per output unit, i.e. W transposed), the rest dense,
batch-norm statistics, the input normalisation and the configuration. It is a plain npz read
with allow_pickle=False: loading it never executes code. Linear layers stored in CSR multiply
in CSR (scipy.sparse on a CPU, cupyx.scipy.sparse on a GPU).
"""
import argparse
import json
import os
import sys
import zipfile

import numpy as np

import backend
import data
import models

MODEL_FILE = 'model.npz'


class ExportError(Exception):
    """A problem with a run directory or a model file; the message is one line."""


def csr_bytes(nnz, rows, value_bytes=4):
    """Bytes of a CSR matrix: values, int32 column indices, int32 row pointers."""
    return nnz * value_bytes + nnz * 4 + (rows + 1) * 4


def to_csr(W):
    """W (D, M) -> the CSR arrays of W.T (M rows, one per output unit: a unit's inputs together)."""
    WT = np.ascontiguousarray(W.T)
    rows, cols = np.nonzero(WT)  # row-major order: row by row, columns ascending
    indptr = np.zeros(WT.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=WT.shape[0]), out=indptr[1:])
    return WT[rows, cols], cols.astype(np.int32), indptr.astype(np.int32)


def from_csr(values, indices, indptr, shape):
    """The inverse of to_csr: the dense W (D, M)."""
    WT = np.zeros(shape[::-1], values.dtype)
    WT[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), indices] = values
    return WT.T.copy()


def export(ckpt, path, stats):
    """Write the model file `path` from a loaded checkpoint. stats: (mean, std) of the inputs.
    Returns the per-layer rows: (name, shape, nnz, dense bytes, stored bytes, format)."""
    arrays = {'config': ckpt['config'], 'input/mean': np.asarray(stats[0], np.float32),
              'input/std': np.asarray(stats[1], np.float32)}
    rows = []
    for key in ckpt.files:
        if key.startswith('buffer/'):
            arrays[key] = ckpt[key]
        if not key.startswith('param/'):
            continue
        name, W = key[len('param/'):], ckpt[key]
        nnz = int(np.count_nonzero(W))
        sparse = W.ndim == 2 and csr_bytes(nnz, W.shape[1], W.itemsize) < W.nbytes
        if sparse:
            values, indices, indptr = to_csr(W)
            arrays.update({f'csr/{name}/values': values, f'csr/{name}/indices': indices,
                           f'csr/{name}/indptr': indptr, f'csr/{name}/shape': np.array(W.shape)})
        else:
            arrays[f'dense/{name}'] = W
        stored = csr_bytes(nnz, W.shape[1], W.itemsize) if sparse else W.nbytes
        rows.append((name, W.shape, nnz, W.nbytes, stored, 'CSR' if sparse else 'dense'))
    with open(path + '.tmp', 'wb') as f:
        np.savez(f, **arrays)
    os.replace(path + '.tmp', path)
    return rows


def read_npz(path):
    """np.load without pickles, every way a file can be damaged turned into one line."""
    if not os.path.exists(path):
        raise ExportError(f'{path} does not exist')
    try:
        npz = np.load(path, allow_pickle=False)
        npz.files  # a non-zip file fails above, a zip without arrays here
        return npz
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ExportError(f'{path} is not a readable npz file ({type(e).__name__}: {e}); '
                          f'it is truncated or corrupt: export it again') from None


def load(path):
    """model.npz -> (config, {name: dense W}, {name: (values, indices, indptr, shape)}, buffers, (mean, std)).
    Every array is read here, so a truncated file fails here, in one line."""
    npz = read_npz(path)
    try:
        config = json.loads(str(npz['config']))
        dense = {k[len('dense/'):]: npz[k] for k in npz.files if k.startswith('dense/')}
        names = {k.split('/')[1] for k in npz.files if k.startswith('csr/')}
        csr = {name: tuple(npz[f'csr/{name}/{part}'] for part in ('values', 'indices', 'indptr', 'shape'))
               for name in names}
        buffers = {k[len('buffer/'):]: npz[k] for k in npz.files if k.startswith('buffer/')}
        stats = npz['input/mean'], npz['input/std']
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ExportError(f'{path} is incomplete or corrupt ({type(e).__name__}: {e}); export it again') from None
    return config, dense, csr, buffers, stats


def build(config, dense, csr, buffers, xp=np):
    """The trained model, dense: the architecture of config with the stored weights."""
    model = models.build(config['arch'], config['alpha'], num_classes=data.DATASETS[config['dataset']]['num_classes'],
                         width=config.get('width'), dropout=config.get('dropout', 0.0),
                         kernel_size=config.get('kernel_size', 3))
    weights = {**dense, **{name: from_csr(*parts) for name, parts in csr.items()}}
    for name, p, _ in model.params():
        if name not in weights or weights[name].shape != p.shape:
            raise ExportError(f'the model file does not match {config["arch"]} at alpha {config["alpha"]} ({name})')
        p[...] = weights[name]
    for name, b in model.buffers():
        b[...] = buffers[name]
    return models.to_device(model, xp)


class SparseLinear:
    """Inference-only Linear whose W is held as CSR of W.T (M, D): out (N, M) = x (N, D) @ W + b,
    computed as (W.T @ x.T).T so each output unit sums over its own non-zero inputs only."""

    def __init__(self, values, indices, indptr, shape, b, xp=np):
        if xp is np:
            from scipy.sparse import csr_matrix
        else:
            from cupyx.scipy.sparse import csr_matrix
        self.WT = csr_matrix((xp.asarray(values), xp.asarray(indices), xp.asarray(indptr)), shape=tuple(shape[::-1]))
        self.b = b

    def forward(self, x, train=False):
        out = (self.WT @ x.T).T  # (N, M)
        return out + self.b if self.b is not None else out

    def params(self):
        return iter(())

    def __repr__(self):
        return f'SparseLinear({self.WT.shape[1]}, {self.WT.shape[0]}, nnz={self.WT.nnz})'


def sparse_model(model, csr, xp=np):
    """The same model with every Linear layer stored in CSR swapped for a SparseLinear."""
    layers = list(model.layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, models.Linear) and f'{i}.W' in csr:
            layers[i] = SparseLinear(*csr[f'{i}.W'], layer.b, xp=xp)
    return models.Sequential(layers)


def test_set(config, stats, xp=np):
    """The run's test images, normalised as in training, as one Loader in order."""
    _, _, x_test, y_test = data.load(config['dataset'], config['data_dir'], extra=config.get('svhn_extra', False))
    permutation = data.pixel_permutation(config['seed']) if config.get('permute_pixels') else None
    return data.Loader(x_test, y_test, 1000, xp, *stats, permutation=permutation)


def predict(model, batches):
    logits = [backend.to_numpy(model.forward(x, train=False)) for x, _ in batches.epoch(0)]
    return np.concatenate(logits)


def main(argv=None):
    p = argparse.ArgumentParser(description='Write a compact model file (CSR where that is smaller) and run inference from it.')
    p.add_argument('run', metavar='RUN_DIR', help='a run directory of train.py (holds checkpoint.npz)')
    p.add_argument('--eval', action='store_true', help='run the test set through the sparse model and the dense one')
    p.add_argument('--data-dir', default=None, help="where the dataset lives (default: the run's --data-dir)")
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'gpu'], help='where --eval runs')
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ExportError, data.DataError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


def run(args):
    ckpt = read_npz(os.path.join(args.run, 'checkpoint.npz'))
    config = json.loads(str(ckpt['config']))
    if args.data_dir:
        config['data_dir'] = args.data_dir
    # the input normalisation of training: channel statistics of the training split
    x_train, y_train, _, _ = data.load(config['dataset'], config['data_dir'], extra=config.get('svhn_extra', False))
    x_train, *_ = data.split_validation(x_train, y_train, config.get('val_size', 0), config['seed'])
    path = os.path.join(args.run, MODEL_FILE)
    rows = export(ckpt, path, data.channel_stats(x_train))
    print(f'{"layer":8s} {"shape":>16s} {"non-zeros":>12s} {"density":>8s} {"dense bytes":>13s} {"stored":>12s} '
          f'{"ratio":>7s}  format')
    for name, shape, nnz, dense_bytes, stored, fmt in rows:
        if len(shape) >= 2:
            print(f'{name:8s} {str(shape):>16s} {nnz:12,d} {nnz / np.prod(shape):8.2%} {dense_bytes:13,d} '
                  f'{stored:12,d} {dense_bytes / stored:6.1f}x  {fmt}')
    vectors = [r for r in rows if len(r[1]) < 2]
    print(f'{"others":8s} {"biases, BN":>16s} {sum(r[2] for r in vectors):12,d} {"":8s} '
          f'{sum(r[3] for r in vectors):13,d} {sum(r[4] for r in vectors):12,d} {"1.0x":>7s}  dense')
    dense_total, stored_total = sum(r[3] for r in rows), sum(r[4] for r in rows)
    file_bytes = os.path.getsize(path)
    print(f'{"all":8s} {"":16s} {sum(r[2] for r in rows):12,d} {"":8s} {dense_total:13,d} {stored_total:12,d} '
          f'{dense_total / stored_total:6.1f}x')
    print(f'{path}: {file_bytes:,} bytes ({8 * file_bytes:,} bits, {dense_total / file_bytes:.1f}x smaller than '
          f'the dense weights), with batch-norm statistics, input normalisation and configuration')
    summary_path = os.path.join(args.run, 'summary.json')
    if os.path.exists(summary_path):
        bits = json.load(open(summary_path)).get('description_length_bits')
        print(f"Theorem 2's description length (summary.json): {bits:,.0f} bits; this file: {8 * file_bytes:,} bits")
    if not args.eval:
        return 0
    xp = backend.cupy if args.device != 'cpu' and backend.gpu_available() else np
    config, dense, csr, buffers, stats = load(path)
    model = build(config, dense, csr, buffers, xp)
    batches = test_set(config, stats, xp)
    dense_logits, sparse_logits = predict(model, batches), predict(sparse_model(model, csr, xp), batches)
    labels = backend.to_numpy(batches.labels)
    same = int((dense_logits.argmax(1) == sparse_logits.argmax(1)).sum())
    print(f'test accuracy: sparse {np.mean(sparse_logits.argmax(1) == labels):.2%}, dense '
          f'{np.mean(dense_logits.argmax(1) == labels):.2%}; the same prediction on {same:,} of {len(labels):,} '
          f'images; logits differ by at most {np.abs(dense_logits - sparse_logits).max():.2g} '
          f'(largest |logit| {np.abs(dense_logits).max():.3g})')
    return 0 if same == len(labels) else 1


if __name__ == '__main__':
    sys.exit(main())
