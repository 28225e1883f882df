"""prune.py (iterative magnitude pruning) and train.py's --mask: what is pruned, that it stays
pruned under both optimizers, the rewind to initial values, and resuming an interrupted round."""
import json
import os

import numpy as np
import pytest

import data
import models
import prune
import train

FLAGS = ['--dataset', 'nlgp', '--arch', 's_fc', '--alpha', '1', '--epochs', '2', '--batch-size', '40',
         '--augment', 'none', '--quiet', '--seed', '3']


@pytest.fixture(autouse=True)
def small_nlgp(monkeypatch):
    monkeypatch.setitem(data.DATASETS['nlgp'], 'sizes', (200, 40))  # 5 steps an epoch


def weights(run_dir):
    with np.load(os.path.join(run_dir, 'checkpoint.npz')) as c:
        return {k: c[k] for k in c.files if k.startswith(('param/', 'mask/', 'buffer/'))}


def test_prune_takes_the_smallest_of_the_alive():
    w = np.array([[0.5, -0.1, 0.0, 2.0], [-3.0, 0.2, 0.05, -0.3]])
    alive = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], bool)
    mask = prune.prune(w, alive, 0.5)  # 7 alive: round(3.5) = 4 go: 0.05, -0.1, 0.2, -0.3
    assert mask.tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]
    assert prune.prune(w, alive, 0.1).sum() == 6 and not (prune.prune(w, alive, 0.9) > alive).any()


def test_masked_weights_stay_zero_and_survivors_start_from_the_seed(tmp_path):
    """Under SGD with momentum and weight decay, and under beta-LASSO, every weight the mask
    prunes is exactly zero after training, and the mask is in the checkpoint."""
    model = models.build('s_fc', 1, num_classes=2, seed=3)
    rng = np.random.default_rng(0)
    masks = {name: (rng.random(p.shape) < 0.3).astype(np.float32) for name, p, _ in model.params() if p.ndim == 2}
    np.savez(tmp_path / 'mask.npz', **masks)
    for opt in ([], ['--beta', '50', '--lr', '1', '--lam-conv', '1e-6', '--lam-fc', '1e-6']):
        out = tmp_path / f'run{len(opt)}'
        assert train.main(FLAGS + ['--out', str(out), '--mask', str(tmp_path / 'mask.npz')] + opt) == 0
        trained = weights(out)
        for name, m in masks.items():
            assert np.array_equal(trained[f'mask/{name}'], m)
            assert np.all(trained[f'param/{name}'][m == 0] == 0) and np.count_nonzero(trained[f'param/{name}'][m == 1])


def test_load_masks_rewinds_to_the_seeds_initial_values(tmp_path):
    model = models.build('s_fc', 1, num_classes=2, seed=3)
    init = {name: p.copy() for name, p, _ in model.params()}
    mask = (np.random.default_rng(1).random(init['1.W'].shape) < 0.5).astype(np.float32)
    np.savez(tmp_path / 'mask.npz', **{'1.W': mask})
    args = train.parse_args(FLAGS + ['--out', str(tmp_path / 'r'), '--mask', str(tmp_path / 'mask.npz')])
    masks = train.load_masks(args, model, None, np)
    params = {name: p for name, p, _ in model.params()}
    assert set(masks) == {'1.W'} and np.array_equal(params['1.W'], init['1.W'] * mask)
    assert all(np.array_equal(params[name], init[name]) for name in init if name != '1.W')


def test_a_mask_of_another_shape_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / 'mask.npz', **{'1.W': np.ones((3, 3))})
    with pytest.raises(SystemExit):
        train.main(FLAGS + ['--out', str(tmp_path / 'r'), '--mask', str(tmp_path / 'mask.npz')])
    assert 'not a 0/1 array shaped as' in capsys.readouterr().err


def test_rounds_prune_the_stated_fraction(tmp_path):
    assert prune.main(['--rounds', '3', '--fraction', '0.5', '--out', str(tmp_path), '--'] + FLAGS) == 0
    sizes = {name: p.size for name, p, _ in models.build('s_fc', 1, num_classes=2).params() if p.ndim == 2}
    for r, kept in ((1, 0.5), (2, 0.25)):
        mask = np.load(tmp_path / f'mask-{r}.npz')
        for name, size in sizes.items():
            assert mask[name].sum() == round(kept * size), (r, name)
        alive_before = np.load(tmp_path / f'mask-{r - 1}.npz')[name] if r > 1 else np.ones(size)
        assert not (mask[name].ravel() > alive_before.ravel()).any()  # nothing comes back
    summary = json.load(open(tmp_path / 'round-2' / 'summary.json'))
    assert summary['layers']['1.W']['nonzero'] <= round(0.25 * sizes['1.W'])
    whole = json.load(open(tmp_path / 'summary.json'))  # the procedure as one run, for reproduce.py
    assert whole['layers'] == summary['layers'] and whole['imp_rounds'] == 3
    assert whole['seconds'] == pytest.approx(sum(json.load(open(tmp_path / f'round-{r}' / 'summary.json'))['seconds']
                                                 for r in range(3)))
    assert json.load(open(tmp_path / 'config.json'))['imp_fraction'] == 0.5
    assert prune.main(['--rounds', '3', '--fraction', '0.5', '--out', str(tmp_path), '--'] + FLAGS) == 0  # done: nothing runs
    first_only = tmp_path / 'first'
    assert prune.main(['--rounds', '2', '--fraction', '0.5', '--first-layer-only', '--out', str(first_only), '--'] + FLAGS) == 0
    mask = np.load(first_only / 'mask-1.npz')
    assert mask['1.W'].mean() == 0.5 and mask['4.W'].min() == 1 and mask['7.W'].min() == 1


def test_an_interrupted_round_resumes_to_the_same_end(tmp_path, monkeypatch):
    """Round 1 is stopped after its first step, as by Ctrl-C; the same command continues it, and
    the procedure ends with the weights of one that was never interrupted."""
    whole, stopped = tmp_path / 'whole', tmp_path / 'stopped'
    assert prune.main(['--rounds', '2', '--out', str(whole), '--'] + FLAGS) == 0
    real_epoch = train.train_epoch

    def stop_in_round_1(args, *rest):
        interrupted = rest[6]  # train_epoch(args, model, batches, groups, velocity, progress, epoch, interrupted, masks)
        if args.out.endswith('round-1') and not interrupted:
            interrupted.append(2)  # SIGINT, as catch_stop_signals records it: the step ends, then the run stops
        return real_epoch(args, *rest)
    monkeypatch.setattr(train, 'train_epoch', stop_in_round_1)
    assert prune.main(['--rounds', '2', '--out', str(stopped), '--'] + FLAGS) == train.INTERRUPTED
    assert not (stopped / 'round-1' / 'summary.json').exists()
    monkeypatch.setattr(train, 'train_epoch', real_epoch)
    assert prune.main(['--rounds', '2', '--out', str(stopped), '--'] + FLAGS) == 0
    a, b = weights(whole / 'round-1'), weights(stopped / 'round-1')
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_flags_are_one_line():
    with pytest.raises(SystemExit, match='--fraction'):
        prune.main(['--fraction', '1.5', '--out', 'x'])
    with pytest.raises(SystemExit, match='sets --out'):
        prune.main(['--out', 'x', '--', '--mask', 'y.npz'])
