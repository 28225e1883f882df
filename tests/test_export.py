"""export.py: the compact model file round-trips exactly, its sizes are the CSR formula, the CSR
forward equals the dense one, and damaged files are one-line errors."""
import json
import os

import numpy as np
import pytest

import bench
import data
import export
import models
import train
from fixtures import make_cifar10, md5


def sparsify(model, keep, seed=0):
    """Zero all but a `keep` share of every weight matrix; random batch-norm statistics."""
    rng = np.random.default_rng(seed)
    for _, p, _ in model.params():
        if p.ndim >= 2:
            p *= rng.random(p.shape) < keep
    for _, b in model.buffers():
        b[...] = rng.uniform(0.5, 1.5, b.shape) if b.dtype.kind == 'f' else b
    return model


def write_checkpoint(directory, model, arch='s_fc', alpha=2):
    config = dict(arch=arch, alpha=alpha, dataset='cifar10', seed=0, width=None, dropout=0.0)
    train.save_checkpoint(os.path.join(directory, 'checkpoint.npz'), model, {}, config, dict(epoch=1))
    return export.read_npz(os.path.join(directory, 'checkpoint.npz'))


def test_round_trip_is_exact_at_density_0_1_and_100_percent(tmp_path):
    model = models.build('s_fc', 2)
    W1, W4, W7 = (p for name, p, _ in model.params() if p.ndim == 2)
    W1[...] = 0  # density 0
    W4 *= np.random.default_rng(1).random(W4.shape) < 0.01  # about 1%
    assert 0.005 < np.count_nonzero(W4) / W4.size < 0.02 and np.count_nonzero(W7) == W7.size  # 100%
    sparsify(model, keep=1.0)  # random batch-norm statistics, weights kept
    path = str(tmp_path / 'model.npz')
    rows = export.export(write_checkpoint(tmp_path, model), path, ([1, 2, 3], [4, 5, 6]))
    config, dense, csr, buffers, stats = export.load(path)
    assert set(csr) == {'1.W', '4.W'} and '7.W' in dense  # 7.W is dense: CSR would be larger
    loaded = export.build(config, dense, csr, buffers)
    for (name, p, _), (_, q, _) in zip(model.params(), loaded.params()):
        assert p.dtype == q.dtype and np.array_equal(p, q), name
    for (name, b), (_, c) in zip(model.buffers(), loaded.buffers()):
        assert np.array_equal(b, c), name
    assert np.array_equal(stats[0], np.float32([1, 2, 3])) and config['arch'] == 's_fc'
    for name, shape, nnz, dense_bytes, stored, fmt in rows:  # the reported sizes are the formula
        assert dense_bytes == np.prod(shape) * 4
        if fmt == 'CSR':
            values, indices, indptr, _ = csr[name]
            assert stored == nnz * 4 + nnz * 4 + (shape[1] + 1) * 4 == values.nbytes + indices.nbytes + indptr.nbytes
            assert indices.dtype == indptr.dtype == np.int32
        else:
            assert stored == dense_bytes


@pytest.mark.parametrize('arch', list(models.ARCHS))
def test_sparse_forward_equals_dense_forward(arch, tmp_path):
    model = sparsify(models.build(arch, 1), keep=0.05, seed=2)
    export.export(write_checkpoint(tmp_path, model, arch, 1), str(tmp_path / 'model.npz'), ([0] * 3, [1] * 3))
    config, dense, csr, buffers, _ = export.load(str(tmp_path / 'model.npz'))
    loaded = export.build(config, dense, csr, buffers)
    sparse = export.sparse_model(loaded, csr)
    assert sum(isinstance(layer, export.SparseLinear) for layer in sparse.layers) >= 1
    x = np.random.default_rng(3).standard_normal((6, 3, 32, 32), dtype=np.float32)
    want, got = model.forward(x, train=False), sparse.forward(x, train=False)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max()), np.abs(got - want).max()
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_damaged_model_files_are_one_line_errors(tmp_path, capsys):
    model = sparsify(models.build('s_fc', 1), keep=0.05)
    path = str(tmp_path / 'model.npz')
    export.export(write_checkpoint(tmp_path, model, alpha=1), path, ([0] * 3, [1] * 3))
    whole = open(path, 'rb').read()
    for damage in (whole[:len(whole) // 2], b'not a zip file at all', whole[:100]):
        open(path, 'wb').write(damage)
        with pytest.raises(export.ExportError) as e:
            export.load(path)
        assert path in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(export.ExportError, match='does not exist'):
        export.load(str(tmp_path / 'missing.npz'))
    open(tmp_path / 'checkpoint.npz', 'wb').write(b'garbage')
    assert export.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error:') and 'checkpoint.npz' in err and len(err.splitlines()) == 1


def test_export_and_eval_of_a_trained_run(tmp_path, monkeypatch, capsys):
    archive = make_cifar10(str(tmp_path), per_batch=40, test=40)
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(archive))
    run = str(tmp_path / 'run')
    assert train.main(['--data-dir', str(tmp_path), '--out', run, '--quiet', '--batch-size', '40', '--arch', 's_fc',
                       '--alpha', '2', '--epochs', '2', '--beta', '50', '--lam-conv', '1e-3', '--augment', 'none',
                       '--val-size', '40']) == 0
    capsys.readouterr()
    assert export.main([run, '--eval']) == 0
    out = capsys.readouterr().out
    assert 'the same prediction on 40 of 40 images' in out and "Theorem 2's description length" in out
    first = next(line for line in out.splitlines() if line.startswith('1.W'))
    assert first.endswith('CSR')
    rows = bench.sparse_vs_dense(run, steps=1)
    assert [r['batch'] for r in rows if r['what'] == 'whole model'] == [1, 128, 1024]
    assert all(r['dense_images_per_s'] > 0 and r['sparse_images_per_s'] > 0 for r in rows)
    summary = json.load(open(os.path.join(run, 'summary.json')))
    assert summary['layers']['1.W']['nonzero'] == int(first.split()[3].replace(',', ''))
