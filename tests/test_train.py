"""train.py end to end on tiny generated data in the real CIFAR-10 format."""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import blasso
import backend
import data
import models
import train
from fixtures import make_cifar10, make_extracted_cifar10, md5


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp('tiny')
    make_cifar10(str(directory), per_batch=40, test=40)  # 200 train, 40 test images
    return str(directory)


@pytest.fixture(autouse=True)
def tiny_md5(tiny_dir, monkeypatch):
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))


def run(tiny_dir, out, *flags):
    return train.main(['--data-dir', tiny_dir, '--out', str(out), '--quiet', '--batch-size', '40', *flags])


def read_metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl'))]


@pytest.mark.parametrize('arch', list(models.ARCHS))
@pytest.mark.parametrize('optimizer', [[], ['--beta', '50']], ids=['sgd', 'blasso'])
def test_every_architecture_and_optimizer(tiny_dir, tmp_path, arch, optimizer):
    assert run(tiny_dir, tmp_path, '--arch', arch, '--alpha', '1', '--epochs', '1', *optimizer) == 0
    for name in ('config.json', 'summary.json'):
        json.load(open(tmp_path / name))
    (line,) = read_metrics(tmp_path)
    assert line['epoch'] == 1 and 0 <= line['test_acc'] <= 1 and line['nonzero']['total'] > 0
    ckpt = np.load(tmp_path / 'checkpoint.npz', allow_pickle=False)
    assert json.loads(str(ckpt['config']))['arch'] == arch
    Image.open(tmp_path / 'filters.png').verify()
    Image.open(tmp_path / 'curves.png').verify()


def test_loss_falls_and_files_parse(tiny_dir, tmp_path, capsys):
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '2', '--epochs', '4', '--val-size', '40',
               '--augment', 'none', '--lr', '0.05') == 0
    metrics = read_metrics(tmp_path)
    assert [m['epoch'] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]['train_loss'] < 0.5 * metrics[0]['train_loss'], [m['train_loss'] for m in metrics]
    assert metrics[-1]['test_acc'] > 0.5 and metrics[-1]['val_acc'] is not None
    summary = json.load(open(tmp_path / 'summary.json'))
    assert summary['best_test_acc_chosen_on_test'] >= summary['final_test_acc'] > 0.5
    best = max(metrics, key=lambda m: m['val_acc'])
    assert summary['selected_epoch'] == best['epoch'] and summary['selected_test_acc'] == best['test_acc']
    assert 0 < summary['locality_score'] < 1 and summary['description_length_bits'] > 0
    assert set(summary['layers']) == {'1.W', '4.W', '7.W'}
    out = capsys.readouterr().out
    assert 'optimizer: SGD, momentum 0.9' in out and 'locality score of the first layer' in out


def test_blasso_with_large_lambda_prunes_epoch_after_epoch(tiny_dir, tmp_path):
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '2', '--epochs', '4', '--beta', '50',
               '--lam-conv', '1e-3', '--lam-fc', '1e-3', '--lr', '0.05') == 0
    totals = [m['nonzero']['total'] for m in read_metrics(tmp_path)]
    assert all(a > b for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < 0.2 * models.build('s_fc', 2).num_params()


def interrupt_at(monkeypatch, step_function, call, signum=signal.SIGINT, times=1):
    """Deliver a real signal (SIGINT: a Ctrl-C) from inside the `call`-th optimizer step."""
    real, calls = getattr(blasso, step_function), []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return real(*args, **kwargs)
    monkeypatch.setattr(blasso, step_function, step)


def test_interrupt_and_resume_match_an_uninterrupted_run(tiny_dir, tmp_path, monkeypatch, capsys):
    flags = ['--arch', 's_fc', '--alpha', '2', '--epochs', '3', '--beta', '50', '--cutout', '--dropout', '0.2']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    interrupt_at(monkeypatch, 'blasso_step', 7)  # epoch 2 (5 steps an epoch), step 2
    assert run(tiny_dir, tmp_path / 'split', *flags) == 130
    out = capsys.readouterr().out
    assert f'continue with: python train.py --resume {tmp_path / "split"}' in out
    assert len(read_metrics(tmp_path / 'split')) == 1
    stopped = json.loads(str(np.load(tmp_path / 'split' / 'checkpoint.npz', allow_pickle=False)['progress']))
    assert (stopped['epoch'], stopped['step']) == (1, 2) and 'at epoch 2, step 2' in out  # the step in flight ends, no more
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    assert train.main(['--resume', str(tmp_path / 'split'), '--quiet']) == 0
    whole = np.load(tmp_path / 'whole' / 'checkpoint.npz', allow_pickle=False)
    split = np.load(tmp_path / 'split' / 'checkpoint.npz', allow_pickle=False)
    arrays = [k for k in whole.files if k.startswith(('param/', 'buffer/'))]
    assert arrays and all(np.array_equal(whole[k], split[k]) for k in arrays)
    timeless = lambda m: {k: v for k, v in m.items() if k not in ('seconds', 'images_per_s')}  # noqa: E731
    assert [timeless(m) for m in read_metrics(tmp_path / 'whole')] == [timeless(m) for m in read_metrics(tmp_path / 'split')]


def test_sgd_resume_restores_momentum(tiny_dir, tmp_path, monkeypatch):
    flags = ['--arch', 's_conv', '--alpha', '2', '--epochs', '2']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    interrupt_at(monkeypatch, 'sgd_step', 5)  # the last step of epoch 1
    assert run(tiny_dir, tmp_path / 'split', *flags) == 130
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    assert train.main(['--resume', str(tmp_path / 'split'), '--quiet']) == 0
    whole = np.load(tmp_path / 'whole' / 'checkpoint.npz', allow_pickle=False)
    split = np.load(tmp_path / 'split' / 'checkpoint.npz', allow_pickle=False)
    assert any(k.startswith('velocity/') for k in whole.files)
    assert all(np.array_equal(whole[k], split[k]) for k in whole.files if '/' in k)


def test_runs_written_before_augment_resume_as_they_were(tiny_dir, tmp_path, monkeypatch):
    """A checkpoint from before --augment (crop, flip and cutout switches) continues with crop + flip."""
    flags = ['--arch', 's_fc', '--alpha', '1', '--epochs', '2', '--augment', 'basic']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    assert json.load(open(tmp_path / 'whole' / 'config.json'))['augment'] == 'basic'
    interrupt_at(monkeypatch, 'sgd_step', 3)
    assert run(tiny_dir, tmp_path / 'old', *flags) == 130
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    path = tmp_path / 'old' / 'checkpoint.npz'
    arrays = dict(np.load(path, allow_pickle=False))
    config = json.loads(str(arrays['config']))
    del config['augment']
    config.update(crop=True, flip=True, cutout=False)  # an older version's configuration
    arrays['config'] = np.array(json.dumps(config))
    np.savez(path, **arrays)
    assert train.main(['--resume', str(tmp_path / 'old'), '--quiet']) == 0
    assert json.load(open(tmp_path / 'old' / 'config.json'))['augment'] == 'basic'
    whole, old = np.load(tmp_path / 'whole' / 'checkpoint.npz'), np.load(path)
    assert all(np.array_equal(whole[k], old[k]) for k in whole.files if k.startswith('param/'))


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGUSR2])
def test_slurm_signals_checkpoint_like_ctrl_c(tiny_dir, tmp_path, monkeypatch, capsys, signum):
    """What Slurm and submitit send before a time limit: finish the step, checkpoint, exit 130;
    a repeated signal (Slurm may signal the whole process tree) changes nothing."""
    flags = ['--arch', 's_fc', '--alpha', '1', '--epochs', '2', '--beta', '50']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    interrupt_at(monkeypatch, 'blasso_step', 3, signum, times=2)
    before = signal.getsignal(signum)
    assert run(tiny_dir, tmp_path / 'split', *flags) == train.INTERRUPTED == 130
    assert f'interrupted ({signal.Signals(signum).name}) at epoch 1, step 3' in capsys.readouterr().out
    assert signal.getsignal(signum) is before  # the handler is put back
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    assert train.main(['--resume', str(tmp_path / 'split'), '--quiet']) == 0
    whole, split = np.load(tmp_path / 'whole' / 'checkpoint.npz'), np.load(tmp_path / 'split' / 'checkpoint.npz')
    assert all(np.array_equal(whole[k], split[k]) for k in whole.files if k.startswith('param/'))


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tiny_dir, tmp_path, capsys):
    """A truncated newest checkpoint: the run continues from the one before, saying so, and ends
    with the weights it had; when both are damaged, one line naming both."""
    out = tmp_path / 'run'
    assert run(tiny_dir, out, '--arch', 's_fc', '--alpha', '1', '--epochs', '3', '--augment', 'none', '--save-minutes', '0') == 0
    good = np.load(out / 'checkpoint.npz')
    whole = (out / 'checkpoint.npz').read_bytes()
    (out / 'checkpoint.npz').write_bytes(whole[:len(whole) // 2])
    capsys.readouterr()
    assert train.main(['--resume', str(out), '--quiet']) == 0  # epoch 3 again, from epoch 2's checkpoint
    assert 'resuming from the previous checkpoint' in capsys.readouterr().err
    again = np.load(out / 'checkpoint.npz')
    assert all(np.array_equal(good[k], again[k]) for k in good.files if k.startswith('param/'))
    assert [m['epoch'] for m in read_metrics(out)] == [1, 2, 3]
    for damage in (whole[:len(whole) // 2], b'\x93NUMPY not a zip file'):
        (out / 'checkpoint.npz').write_bytes(damage)
        (out / 'checkpoint.prev.npz').write_bytes(damage)
        with pytest.raises(SystemExit) as e:
            train.main(['--resume', str(out), '--quiet'])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert 'checkpoint.npz is damaged' in err and 'checkpoint.prev.npz is damaged' in err and 'pickled' not in err


def test_train_size_is_a_balanced_recorded_subset(tiny_dir, tmp_path, capsys):
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '1', '--epochs', '1', '--val-size', '40',
               '--train-size', '80') == 0
    assert json.load(open(tmp_path / 'config.json'))['train_size'] == 80
    assert '80 train / 40 val / 40 test' in capsys.readouterr().out
    y = np.repeat(np.arange(10), 30)
    keep = data.balanced_subset(y, 25, seed=1)
    assert len(keep) == len(set(keep)) == 25 and np.bincount(y[keep]).tolist() == [3] * 5 + [2] * 5
    assert not np.array_equal(keep, data.balanced_subset(y, 25, seed=2))


def test_eval_every(tiny_dir, tmp_path):
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '1', '--epochs', '7', '--eval-every', '3',
               '--val-size', '40') == 0
    metrics = read_metrics(tmp_path)
    assert [m['epoch'] for m in metrics if m['test_acc'] is not None] == [3, 6, 7]  # and always the last
    assert all((m['val_acc'] is None) == (m['test_acc'] is None) for m in metrics)
    summary = json.load(open(tmp_path / 'summary.json'))
    assert summary['selected_epoch'] in (3, 6, 7) and summary['final_test_acc'] == metrics[-1]['test_acc']


def test_save_every(tiny_dir, tmp_path):
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '1', '--epochs', '3', '--save-every', '2') == 0
    progress = json.loads(str(np.load(tmp_path / 'checkpoint.npz', allow_pickle=False)['progress']))
    assert progress['epoch'] == 3 and len(read_metrics(tmp_path)) == 3  # the last epoch always saves


def test_nan_guard(tiny_dir, tmp_path, capsys):
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '2', '--epochs', '2', '--lr', '1e30') == 1
    err = capsys.readouterr().err.strip()
    assert 'the loss is nan by epoch 1, step' in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / 'checkpoint.npz')  # nothing bad was written


def test_cpu_note_for_slow_settings(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, 'macs_per_image', lambda model: 10 ** 12)  # as if paper-sized
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '1', '--epochs', '1', '--beta', '50') == 0
    out = capsys.readouterr().out
    assert 'note: on this CPU an epoch takes at least' in out
    assert 'python train.py --arch s_fc --alpha 4 --epochs 3 --beta 50' in out


@pytest.mark.parametrize('flags,message', [
    (['--arch', 'resnet'], "unknown arch 'resnet'"),
    (['--dataset', 'mnist'], "unknown dataset 'mnist'"),
    (['--alpha', '0'], '--alpha must be finite and positive'),
    (['--alpha', 'x'], "invalid int value: 'x'"),
    (['--lr', '-1'], '--lr must be finite and positive'),
    (['--lr', 'nan'], '--lr must be finite and positive, got nan'),
    (['--lr', 'inf'], '--lr must be finite and positive, got inf'),
    (['--beta', '-5'], '--beta must be finite and 0 or more'),
    (['--lam-conv', '-1'], '--lam-conv must be finite and 0 or more'),
    (['--lam-fc', 'nan'], '--lam-fc must be finite'),
    (['--momentum', '1'], '--momentum must be finite and in [0, 1)'),
    (['--weight-decay', '-0.1'], '--weight-decay must be finite and 0 or more'),
    (['--dropout', '1.5'], '--dropout must be finite and in [0, 1)'),
    (['--width', '0'], '--width must be finite and positive'),
    (['--save-every', '0'], '--save-every must be finite and positive'),
    (['--train-size', '0'], '--train-size must be finite and positive'),
    (['--train-size', '500'], 'train_size 500 needs 50 images of class'),
    (['--val-size', '-1'], '--val-size must be finite and 0 or more'),
    (['--batch-size', '0'], '--batch-size must be finite and positive'),
    (['--epochs', '0'], '--epochs must be finite and positive'),
    (['--batch-size', '1000'], '--batch-size 1000 is larger than the 200 training images'),
    (['--val-size', '500'], 'val_size must be in'),
    (['--device', 'tpu'], "invalid choice: 'tpu'"),
])
def test_bad_input_is_one_line_and_status_2(tiny_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        train.main(['--data-dir', tiny_dir, '--out', str(tmp_path), '--alpha', '1', '--quiet', *flags])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and message in err and len(err.splitlines()) == 1, err


def test_gpu_without_gpu(tiny_dir, tmp_path, capsys):
    if backend.gpu_available():
        pytest.skip('a GPU is present')
    with pytest.raises(SystemExit) as e:
        run(tiny_dir, tmp_path, '--alpha', '1', '--device', 'gpu')
    assert e.value.code == 2 and '--device gpu needs CuPy' in capsys.readouterr().err


def test_existing_run_needs_resume(tiny_dir, tmp_path, capsys):
    assert run(tiny_dir, tmp_path, '--alpha', '1', '--epochs', '1') == 0
    with pytest.raises(SystemExit) as e:
        run(tiny_dir, tmp_path, '--alpha', '1', '--epochs', '1')
    assert e.value.code == 2 and f'--resume {tmp_path}' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        train.main(['--resume', str(tmp_path / 'nothing')])
    assert e.value.code == 2 and 'holds no checkpoint.npz' in capsys.readouterr().err


def test_checkpoint_of_another_version_is_one_line(tiny_dir, tmp_path, capsys):
    assert run(tiny_dir, tmp_path, '--arch', 's_conv', '--alpha', '1', '--epochs', '1') == 0
    path = tmp_path / 'checkpoint.npz'
    arrays = dict(np.load(path, allow_pickle=False))
    arrays['param/0.W'] = arrays.pop('param/1.W')  # S-CONV's layer numbers before ChannelsLast
    np.savez(path, **arrays)
    with pytest.raises(SystemExit) as e:
        train.main(['--resume', str(tmp_path), '--quiet'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and 'another version of blasso (1.W differs)' in err and len(err.splitlines()) == 1


def test_missing_data_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data.urllib.request, 'urlopen', lambda *a, **k: (_ for _ in ()).throw(OSError('offline')))
    with pytest.raises(SystemExit) as e:
        train.main(['--data-dir', str(tmp_path / 'empty'), '--out', str(tmp_path / 'run'), '--alpha', '1'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and 'could not download' in err and len(err.splitlines()) == 1


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(['--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for flag in ('--arch', '--dataset', '--data-dir', '--alpha', '--width', '--epochs', '--batch-size', '--lr',
                 '--momentum', '--weight-decay', '--dropout', '--augment', '--cutout', '--permute-pixels',
                 '--val-size', '--seed', '--device', '--out', '--resume', '--beta', '--lam-conv', '--lam-fc', '--quiet'):
        assert flag in out, flag


def test_cifar100_and_svhn(tmp_path, monkeypatch):
    from fixtures import make_cifar100, make_svhn
    c100 = make_cifar100(str(tmp_path), train=200, test=20)
    monkeypatch.setitem(data.DATASETS['cifar100'], 'md5', md5(c100))
    svhn = make_svhn(str(tmp_path), train=120, test=20)
    monkeypatch.setitem(data.DATASETS['svhn'], 'md5', {os.path.basename(p): md5(p) for p in svhn.values()})
    for dataset, classes in (('cifar100', 100), ('svhn', 10)):
        out = tmp_path / dataset
        assert train.main(['--data-dir', str(tmp_path), '--out', str(out), '--quiet', '--batch-size', '40',
                           '--dataset', dataset, '--arch', 's_fc', '--alpha', '1', '--epochs', '1',
                           '--cutout', '--permute-pixels', '--beta', '50']) == 0
        ckpt = np.load(out / 'checkpoint.npz', allow_pickle=False)
        assert ckpt['param/7.W'].shape == (24, classes)  # the last layer has one output per class


def test_train_and_resume_on_cupy(tiny_dir, tmp_path, monkeypatch, xp):
    """A short run on the GPU, interrupted and resumed, ends where the uninterrupted GPU run ends,
    and close to the same run on the CPU (cuBLAS and OpenBLAS round differently, and a weight
    near the threshold may fall on either side)."""
    if xp is np:
        pytest.skip('trains on CuPy')
    flags = ['--arch', 's_fc', '--alpha', '1', '--epochs', '2', '--beta', '50', '--device', 'gpu']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    interrupt_at(monkeypatch, 'blasso_step', 3)
    assert run(tiny_dir, tmp_path / 'split', *flags) == 130
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    assert train.main(['--resume', str(tmp_path / 'split'), '--quiet']) == 0
    assert run(tiny_dir, tmp_path / 'cpu', *flags[:-1], 'cpu') == 0
    whole, split, cpu = (np.load(tmp_path / d / 'checkpoint.npz') for d in ('whole', 'split', 'cpu'))
    params = [k for k in whole.files if k.startswith('param/')]
    assert all(np.array_equal(whole[k], split[k]) for k in params)
    for k in params:
        assert np.mean(np.abs(whole[k] - cpu[k]) > 1e-3) < 0.01, k


def test_filters_over_time(tiny_dir, tmp_path, monkeypatch):
    """Fig. 4 over time: the same seeded units at the start and at the snapshot epochs, drawn
    as one grid; a resumed run's history equals an uninterrupted one's."""
    import report
    assert report.snapshot_epochs(400) == [0, 4, 12, 40, 120, 400] and report.snapshot_epochs(3) == [0, 1, 3]
    flags = ['--arch', 's_fc', '--alpha', '1', '--epochs', '3', '--beta', '50', '--seed', '3']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    history = np.load(tmp_path / 'whole' / 'filter_history.npz')
    assert sorted(history.files) == ['epoch0', 'epoch1', 'epoch3']
    start = report.first_layer_maps(models.build('s_fc', 1, seed=3), 32, 3)
    units = np.sort(np.random.default_rng(3).choice(len(start), 64, replace=False))
    assert np.array_equal(history['epoch0'], start[units])  # the initial weights of the chosen units
    assert not np.array_equal(history['epoch3'], history['epoch0'])
    assert Image.open(tmp_path / 'whole' / 'filters-over-time.png').size == (3 * 66, 14 + 8 * 66)
    interrupt_at(monkeypatch, 'blasso_step', 7)  # in epoch 2 of 3 (5 steps an epoch)
    assert run(tiny_dir, tmp_path / 'split', *flags) == 130
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    assert train.main(['--resume', str(tmp_path / 'split'), '--quiet']) == 0
    split = np.load(tmp_path / 'split' / 'filter_history.npz')
    assert sorted(split.files) == sorted(history.files) and all(np.array_equal(split[k], history[k]) for k in history.files)


def test_save_due_by_time_by_epochs_and_at_the_end():
    args = argparse.Namespace(epochs=10, save_minutes=10.0, save_every=None)
    assert not train.save_due(args, 0, 9.99) and train.save_due(args, 0, 10.0) and train.save_due(args, 9, 0.0)
    args.save_every = 3
    assert train.save_due(args, 2, 0.0) and not train.save_due(args, 3, 0.0)
    args.save_minutes = 0.0
    assert all(train.save_due(args, epoch, 0.0) for epoch in range(10))


@pytest.mark.parametrize('tick, expected', [(300, [2, 4, 6]), (295, [3, 6])])
def test_checkpoints_follow_the_clock(tiny_dir, tmp_path, monkeypatch, tick, expected):
    """With --save-minutes 10 and a clock that moves 5 minutes per reading, the checkpoint is
    written after the second epoch (10 minutes to the second: the limit counts), the fourth, and
    the last; at 4 min 55 s per reading, after the third (9 min 50 s after the second is too early)
    and the last."""
    readings = iter(range(0, 10 ** 6, tick))
    monkeypatch.setattr(train, 'time', argparse.Namespace(perf_counter=time.perf_counter, monotonic=lambda: next(readings)))
    saved = []
    real_save = train.save_checkpoint
    monkeypatch.setattr(train, 'save_checkpoint', lambda path, model, velocity, config, progress, masks=None: (
        saved.append(progress['epoch']), real_save(path, model, velocity, config, progress)))
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '1', '--epochs', '6', '--save-minutes', '10') == 0
    assert saved == expected  # 300 s: start 0; epochs 1, 2 end at 5, 10 min; saved at 15; 20, 25; saved at 30; 35; the last


@pytest.fixture(scope='module')
def extracted_dir(tmp_path_factory):
    """The tiny CIFAR-10 extracted, for train.py subprocesses (a folder is read without an MD5 check)."""
    return make_extracted_cifar10(str(tmp_path_factory.mktemp('extracted')))


def test_one_writer_per_run_directory(extracted_dir, tmp_path, capsys):
    """A second train.py on a directory another one is writing stops at once, naming the holder;
    the first run's records stay intact, and a killed run leaves no stale lock."""
    out = tmp_path / 'run'
    script = os.path.join(os.path.dirname(train.__file__), 'train.py')
    first = subprocess.Popen([sys.executable, script, '--data-dir', extracted_dir, '--out', str(out), '--quiet',
                              '--batch-size', '40', '--arch', 's_fc', '--alpha', '1', '--epochs', '100000'],
                             stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(out / 'metrics.jsonl') or not read_metrics(out):  # the first has started its epochs
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.1)
    assert train.holder(str(out)) == str(first.pid)
    with pytest.raises(SystemExit) as e:
        run(extracted_dir, out, '--arch', 's_fc', '--alpha', '1', '--epochs', '2')
    assert e.value.code == 2 and f'is being written by another process (pid {first.pid})' in capsys.readouterr().err
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == train.INTERRUPTED
    epochs = [m['epoch'] for m in read_metrics(out)]
    progress = json.loads(str(np.load(out / 'checkpoint.npz')['progress']))
    assert epochs == list(range(1, len(epochs) + 1)) and progress['epoch'] == len(epochs)
    assert json.load(open(out / 'config.json'))['epochs'] == 100000  # the first run's, not the second's
    assert train.holder(str(out)) is None  # released with the process
    resumed = subprocess.Popen([sys.executable, script, '--resume', str(out), '--quiet'], stdout=subprocess.DEVNULL)
    while train.holder(str(out)) != str(resumed.pid):
        assert time.time() < deadline and resumed.poll() is None
        time.sleep(0.1)
    resumed.kill()  # SIGKILL: no handler runs, and still the OS drops the lock
    resumed.wait()
    assert train.holder(str(out)) is None


def test_cost_line_before_a_gpu_run():
    """What train.py prints on a GPU before the first epoch, checked on the CPU by hand: an FC
    net's multiply-adds per image are its weights."""
    import reproduce
    args = train.parse_args(['--arch', 's_fc', '--alpha', '1', '--epochs', '4', '--batch-size', '100'])
    model = models.build('s_fc', 1)
    weights = 3072 * 256 + 256 * 24 + 24 * 10  # S-FC's three weight matrices at alpha 1
    assert models.macs_per_image(model) == weights
    line = train.cost_line(args, model, steps_per_epoch=50)
    flops = 6 * weights * 100 * 50
    seconds = flops / reproduce.GPU_TFLOPS / 1e12
    assert line.startswith(f'cost: {flops:.3g} FLOP an epoch; at an assumed 20 TFLOP/s {seconds:.3g} s an epoch')
    assert f'{seconds * 4 / 3600:.3g} h for 4 epochs' in line and 'written every 10 minutes of training' in line
    assert f'checkpoints {2 * 4 * model.num_params() * 2 / 1e9:.3g} GB' in line  # SGD: weights and velocity, twice


def test_tf32_is_a_gpu_switch(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('CUPY_TF32', raising=False)
    assert run(tiny_dir, tmp_path, '--arch', 's_fc', '--alpha', '1', '--epochs', '1', '--tf32', '--device', 'cpu') == 0
    assert 'note: --tf32 changes nothing on a CPU' in capsys.readouterr().out and 'CUPY_TF32' not in os.environ
    assert json.load(open(tmp_path / 'config.json'))['tf32'] is True


def test_the_learning_rate_follows_the_cosine_at_every_step_and_after_a_resume(tiny_dir, tmp_path, monkeypatch):
    """lr(step) = lr / 2 * (1 + cos(pi * step / total)) over the whole run (App. A.2), 5 steps an
    epoch here: the values the update receives, uninterrupted and across a resume."""
    seen = []
    real_step = blasso.blasso_step
    monkeypatch.setattr(blasso, 'blasso_step', lambda groups, lr, beta: (seen.append(lr), real_step(groups, lr, beta)))
    flags = ['--arch', 's_fc', '--alpha', '1', '--epochs', '3', '--beta', '50', '--lr', '0.4']
    assert run(tiny_dir, tmp_path / 'whole', *flags) == 0
    expected = [0.2 * (1 + math.cos(math.pi * step / 15)) for step in range(15)]
    assert seen == pytest.approx(expected, rel=1e-12)  # 0.4 at the start, 0.2 halfway, near 0 at the end
    assert seen[0] == pytest.approx(0.4) and seen[7] == pytest.approx(0.2 * (1 + math.cos(7 * math.pi / 15)))
    recorded = [line['lr'] for line in read_metrics(tmp_path / 'whole')]  # metrics.jsonl: the lr at each epoch's end
    assert recorded == pytest.approx([0.2 * (1 + math.cos(math.pi * 5 * epoch / 15)) for epoch in (1, 2, 3)], abs=1e-12)
    seen.clear()
    interrupt_at(monkeypatch, 'blasso_step', 7)  # wraps the recording step above
    assert run(tiny_dir, tmp_path / 'split', *flags) == 130
    monkeypatch.undo()
    monkeypatch.setitem(data.DATASETS['cifar10'], 'md5', md5(os.path.join(tiny_dir, 'cifar-10-python.tar.gz')))
    monkeypatch.setattr(blasso, 'blasso_step', lambda groups, lr, beta: (seen.append(lr), real_step(groups, lr, beta)))
    assert train.main(['--resume', str(tmp_path / 'split'), '--quiet']) == 0
    assert seen == pytest.approx(expected, rel=1e-12)  # the resumed steps continue the same curve


def test_evaluation_uses_the_running_statistics(tiny_dir):
    """A net whose batch statistics differ from its running ones is evaluated with the running
    ones: train.evaluate's loss is that of forward(train=False), not of forward(train=True)."""
    x, y, _, _ = data.load('cifar10', tiny_dir)
    mean, std = data.channel_stats(x)
    batches = data.Loader(x[:80], y[:80], 40, np, mean, std, train=False)
    model = models.build('s_conv', 2, seed=1)
    for layer in models.leaves(model.layers):
        if isinstance(layer, models.BatchNorm):
            layer.running_mean[...], layer.running_var[...] = 0.3, 5.0
    loss, accuracy = train.evaluate(model, batches)

    def loss_with(train_mode):
        total = 0.0
        for xb, yb in batches.epoch(0):
            total += float(models.softmax_cross_entropy(model.forward(xb, train=train_mode), yb)[0]) * len(yb)
        return total / 80
    right = sum(int((model.forward(xb, train=False).argmax(axis=1) == yb).sum()) for xb, yb in batches.epoch(0))
    assert accuracy == right / 80
    before = [layer.running_mean.copy() for layer in models.leaves(model.layers) if isinstance(layer, models.BatchNorm)]
    assert loss == pytest.approx(loss_with(False), rel=1e-6) and abs(loss - loss_with(True)) > 1e-3
    after = [layer.running_mean for layer in models.leaves(model.layers) if isinstance(layer, models.BatchNorm)]
    assert not np.allclose(before[0], after[0])  # the train-mode pass above moved them: evaluate did not


@pytest.mark.parametrize('start', [0, 13])
def test_an_epochs_loss_and_accuracy_are_summed_over_its_batches(tiny_dir, tmp_path, start):
    """train_epoch's sums, read from the device every SYNC_EVERY steps and at the end: with a
    learning rate of 0 the weights stay as they are, so each batch's loss and correct count can be
    computed again afterwards. 25 steps an epoch: reads at steps 10, 20 and 25; resumed at step 13,
    the sums carried in the progress continue. end_epoch writes their means and the next epoch
    sums its own batches only."""
    args = train.parse_args(['--data-dir', tiny_dir, '--out', str(tmp_path), '--quiet', '--arch', 's_fc', '--alpha', '1',
                             '--batch-size', '8', '--epochs', '3'])
    args.lr = 0.0
    batches = train.load_data(args, np)
    model, groups = train.build_model(args, np, batches)
    assert len(batches['train']) == 25 and train.SYNC_EVERY == 10
    carried = dict(loss_sum=7.5, correct=3, seen=start * 8) if start else dict(loss_sum=0.0, correct=0, seen=0)
    progress = dict(epoch=1, step=start, seconds=0.0, **carried)
    assert train.train_epoch(args, model, batches, groups, {}, progress, 1, [])
    loss_sum, correct = carried['loss_sum'], carried['correct']
    for x, y in batches['train'].epoch(1, start):
        logits = model.forward(x, train=True)
        loss_sum += float(models.softmax_cross_entropy(logits, y)[0]) * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    assert progress['step'] == 25 and progress['seen'] == 200
    assert progress['loss_sum'] == pytest.approx(loss_sum, rel=1e-6) and progress['correct'] == correct
    # end_epoch records the epoch's means and starts the next from nothing
    metrics = []
    fresh = train.end_epoch(args, {}, model, batches, {}, progress, metrics, 1, [time.monotonic()])
    assert metrics[0]['train_loss'] == pytest.approx(loss_sum / 200, rel=1e-6) and metrics[0]['train_acc'] == correct / 200
    assert metrics[0]['images_per_s'] == pytest.approx(200 / progress['seconds'], rel=1e-9)
    t0 = time.perf_counter()
    assert train.train_epoch(args, model, batches, groups, {}, fresh, 2, [])
    elapsed = time.perf_counter() - t0
    assert elapsed - 0.5 < fresh['seconds'] <= elapsed  # this epoch's time alone, from 0
    loss_sum, correct = 0.0, 0
    for x, y in batches['train'].epoch(2):
        logits = model.forward(x, train=True)
        loss_sum += float(models.softmax_cross_entropy(logits, y)[0]) * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    assert (fresh['epoch'], fresh['step'], fresh['seen']) == (2, 25, 200)
    assert fresh['loss_sum'] == pytest.approx(loss_sum, rel=1e-6) and fresh['correct'] == correct
