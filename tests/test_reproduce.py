"""reproduce.py: a tiny grid end to end with the local launcher, its report, the Slurm path through
submitit's LocalExecutor (signalled, requeued, resumed), and the sbatch script as text."""
import argparse
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

import reproduce
import train
from fixtures import make_extracted_cifar10



@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """A tiny CIFAR-10, extracted: train.py subprocesses read the folder without an MD5 check."""
    return make_extracted_cifar10(str(tmp_path_factory.mktemp('data')))


@pytest.fixture
def tiny_experiment(tmp_path, monkeypatch):
    """An experiment of 4 runs in 2 cells (SGD: two weight decays; beta-LASSO: two lambdas)."""
    runs = [dict(arch='s_fc', dataset='cifar10', alpha=1, epochs=2, batch_size=40, val_size=40, weight_decay=wd) for wd in (0.0, 5e-4)]
    runs += [dict(arch='s_fc', dataset='cifar10', alpha=1, epochs=2, batch_size=40, val_size=40, beta=50, lam_conv=lam) for lam in (1e-4, 1e-3)]
    monkeypatch.setitem(reproduce.EXPERIMENTS, 'tiny', lambda scale: runs)
    monkeypatch.setitem(reproduce.CELLS, 'tiny', lambda c: (c['arch'], reproduce.method(c)))
    monkeypatch.setattr(reproduce, 'RUNS', str(tmp_path / 'runs'))
    return runs


def test_local_grid_then_report_then_nothing_to_do(tiny_experiment, data_dir, tmp_path, capsys):
    assert reproduce.main(['run', 'tiny', '--jobs', '2', '--data-dir', data_dir]) == 0
    folder = tmp_path / 'runs' / 'tiny'
    names = sorted(os.listdir(folder))
    assert len(names) == 4 and all((folder / n / 'summary.json').exists() for n in names)
    capsys.readouterr()
    assert reproduce.main(['report', 'tiny']) == 0
    text = capsys.readouterr().out
    assert (folder / 'report.md').read_text() in text
    for cell in ('SGD', 'beta-LASSO beta=50'):
        members = [n for n in names if ('-b50-' in n) == (cell != 'SGD')]
        summaries = {n: json.load(open(folder / n / 'summary.json')) for n in members}
        best = max(members, key=lambda n: summaries[n]['best_val_acc'])
        row = next(line for line in text.splitlines() if line.startswith(f'| s_fc / {cell} |'))
        assert f'| {best} |' in row and f'{100 * summaries[best]["selected_test_acc"]:.2f} (2 runs, 1 seed)' in row
    mtimes = {n: os.path.getmtime(folder / n / 'summary.json') for n in names}
    capsys.readouterr()
    assert reproduce.main(['run', 'tiny', '--jobs', '2', '--data-dir', data_dir]) == 0
    assert 'nothing to run' in capsys.readouterr().out
    assert mtimes == {n: os.path.getmtime(folder / n / 'summary.json') for n in names}


def test_an_interrupted_run_is_resumed_by_the_next_command(tiny_experiment, data_dir, tmp_path, monkeypatch):
    run = tiny_experiment[0]
    run_dir = str(tmp_path / 'runs' / 'tiny' / reproduce.run_name(run))
    command = reproduce.train_command(run, run_dir, data_dir)
    assert '--resume' not in command
    os.makedirs(run_dir)
    open(os.path.join(run_dir, 'checkpoint.npz'), 'wb').close()
    assert reproduce.train_command(run, run_dir, data_dir)[2:] == ['--resume', run_dir, '--quiet']


def test_dry_run_lists_commands_and_their_count(capsys):
    assert reproduce.main(['run', 'table2', '--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith('# 345 runs in table2 at --scale paper')  # 4 archs x 10 SGD + 75 beta-LASSO, x 3 datasets
    assert out[-1].startswith('# training compute') and 'GPU-hours at 20 TFLOP/s' in out[-1]
    assert sum(line.startswith('python train.py') for line in out) == 345
    blasso = [line for line in out if '--beta' in line]
    assert len(blasso) == 225 and all('--epochs 4000' in line and '--alpha 150' in line for line in blasso)
    assert reproduce.main(['run', 'table1', '--dry-run', '--scale', 'cpu', '--seeds', '2', '--epochs', '3']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith('# 14 runs in table1 at --scale cpu')  # 7 archs x 1 epoch setting x 2 seeds
    with pytest.raises(SystemExit) as e:
        reproduce.main(['run', 'table9'])
    assert e.value.code == 2 and "invalid choice: 'table9'" in capsys.readouterr().err


def test_only_runs_a_slice_of_the_grid(tmp_path, capsys):
    """--only FLAG=VALUE keeps the runs whose flag has that value, as train.py's command line spells it."""
    reproduce.main(['run', 'cpu-claim', '--dry-run', '--runs-dir', str(tmp_path), '--only', 'seed=2'])
    out = capsys.readouterr().out.splitlines()
    commands = [line for line in out if line.startswith('python train.py')]
    assert len(commands) == 10 and all(line.split('--seed ')[1].startswith('2 ') for line in commands)
    reproduce.main(['run', 'cpu-claim', '--dry-run', '--runs-dir', str(tmp_path), '--only', 'seed=2', '--only', 'lam-conv=0.0002'])
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith('python train.py')]
    assert len(commands) == 2 and all('--lam-conv 0.0002 ' in line for line in commands)
    for bad in ('seed', 'sed=2', 'seed='):
        with pytest.raises(SystemExit) as e:
            reproduce.main(['run', 'cpu-claim', '--dry-run', '--only', bad])
        assert e.value.code == 2 and f'--only {bad}: expected FLAG=VALUE' in capsys.readouterr().err


@pytest.mark.parametrize('run', [
    dict(arch='s_conv', alpha=5, dataset='cifar10', epochs=3, val_size=5000),
    dict(arch='d_local', alpha=3, dataset='cifar100', epochs=2, train_size=1000, beta=50),
    dict(arch='resnet18', alpha=4, kernel_size=7, dataset='svhn', epochs=1, val_size=257, beta=50),
    dict(arch='three_fc', alpha=3, dataset='cifar10', epochs=1, momentum=0.0),
    dict(arch='three_fc', alpha=3, width=37, dataset='cifar10', epochs=1)])
def test_dry_run_cost_is_that_of_the_built_nets(run):
    """FLOPs and checkpoint bytes from the quadratic fit equal those of the net itself, built."""
    import models
    classes = 100 if run['dataset'] == 'cifar100' else 10
    model = models.build(run['arch'], run['alpha'], classes, width=run.get('width'), kernel_size=run.get('kernel_size', 3))
    images = run.get('train_size') or {'cifar10': 50000, 'cifar100': 50000, 'svhn': 73257}[run['dataset']] - run.get('val_size', 0)
    flops, disk = reproduce.cost([run])
    assert flops == pytest.approx(6 * models.macs_per_image(model) * images * run['epochs'], rel=1e-9)
    velocity = run.get('beta') is None and run.get('momentum', 0.9) > 0
    assert disk == pytest.approx(2 * 4 * model.num_params() * (1 + velocity), rel=1e-9)
    two, _ = reproduce.cost([run, dict(run, epochs=2 * run['epochs'])])
    assert two == pytest.approx(3 * flops)
    assert '1.5 GPU-hours at 2 TFLOP/s' in reproduce.cost_text((2e12 * 3600 * 1.5, 0), 2.0)


def test_fig2_sizes_follow_the_parameter_counts():
    import models
    for arch in reproduce.FIG2_ARCHS:
        for size in (2 ** 15, 2 ** 18, 2 ** 21):
            k = reproduce.size_to_width(arch, size)
            model = models.build(arch, 1, width=k) if arch == 'three_fc' else models.build(arch, k)
            count = model.num_params()
            assert size / 2 < count < size * 2, (arch, size, k, count)


def test_sbatch_script_of_a_grid():
    pytest.importorskip('submitit')
    args = argparse.Namespace(
        experiment='table2', partition='gpu', time=90, gpus_per_run=2, cpus_per_run=8, max_parallel=4,
        signal_delay=50, slurm_log_dir='/tmp/logs')
    text = reproduce.sbatch_script(args, 12)
    for line in ('#SBATCH --array=0-11%4', '#SBATCH --gpus-per-node=2', '#SBATCH --time=90',
                 '#SBATCH --signal=USR2@50', '#SBATCH --partition=gpu', '#SBATCH --job-name=blasso-table2'):
        assert line in text.splitlines(), line


def test_slurm_flags_reach_the_executor_and_the_dry_run(tiny_experiment, capsys, monkeypatch):
    """--max-requeues is submitit's cap on requeues after a time limit (its own default, 3, would
    end a long run at its fourth slice); --signal-delay is the sbatch --signal. No Slurm needed:
    a stand-in executor records what it is given."""
    submitit = pytest.importorskip('submitit')
    made = []

    class Executor:
        def __init__(self, folder, max_num_timeout=3):
            made.append(dict(folder=folder, max_num_timeout=max_num_timeout))

        def update_parameters(self, **parameters):
            made[-1].update(parameters)

        def map_array(self, function, *args):
            return [argparse.Namespace(job_id=f'7_{i}') for i in range(len(args[0]))]
    monkeypatch.setattr(submitit, 'SlurmExecutor', Executor)
    flags = ['run', 'tiny', '--launcher', 'slurm', '--time', '30', '--signal-delay', '300', '--max-requeues', '500']
    assert reproduce.main(flags) == 0
    assert made[0]['max_num_timeout'] == 500 and made[0]['signal_delay_s'] == 300 and made[0]['time'] == 30
    assert 'submitted 4 runs as job array 7' in capsys.readouterr().out
    assert reproduce.main(flags + ['--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    assert '# slurm: each run is signalled 300 s before its 30-minute limit, checkpoints and is requeued, at most 500 ' \
           'times (--signal-delay, --max-requeues)' in out and '#SBATCH --signal=USR2@300' in out
    assert reproduce.main(['run', 'tiny', '--launcher', 'slurm', '--dry-run']) == 0
    assert 'at most 100 times' in capsys.readouterr().out  # the default: 100 days at --time 1440
    with pytest.raises(SystemExit) as e:
        reproduce.main(['run', 'tiny', '--launcher', 'slurm', '--time', '2', '--signal-delay', '120'])
    assert e.value.code == 2 and '--signal-delay 120 s must be shorter than --time 2 min' in capsys.readouterr().err


def children(pid):
    """The pids whose parent is pid (Linux /proc)."""
    found = []
    for entry in os.listdir('/proc'):
        try:
            if entry.isdigit() and int(open(f'/proc/{entry}/stat').read().rsplit(')', 1)[1].split()[1]) == pid:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            pass
    return found


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='finds the job process through /proc')
def test_slurm_path_signalled_requeued_resumed(data_dir, tmp_path):
    """The Slurm path without Slurm: submitit's LocalExecutor runs the job. Mid-run (after epoch 2)
    the job gets USR2, as submitit's local controller sends at a time limit and Slurm before one
    (sent by the test at a chosen point, so the check does not hang on the machine's speed): the
    run checkpoints, the job is requeued and resumes, and it ends where an uninterrupted run ends."""
    submitit = pytest.importorskip('submitit')
    flags = dict(arch='s_fc', dataset='cifar10', alpha=1, epochs=6, batch_size=40, augment='none', seed=3)
    executor = submitit.LocalExecutor(folder=str(tmp_path / 'logs'))
    executor.update_parameters(timeout_min=3)  # the safety net; the signal below comes first
    run_dir = str(tmp_path / 'runs' / 'one')
    args = argparse.Namespace(data_dir=data_dir, slurm_log_dir=str(tmp_path / 'logs'), experiment='one')
    (job,) = reproduce.launch_slurm([(run_dir, flags)], args, executor=executor)
    metrics = os.path.join(run_dir, 'metrics.jsonl')
    deadline = time.time() + 120
    while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 2) and time.time() < deadline:
        time.sleep(0.05)
    (task,) = children(int(job.job_id))  # the job's Python process, the controller's one task
    os.kill(task, signal.SIGUSR2)
    assert job.result() == run_dir
    log = open(os.path.join(run_dir, 'train.log')).read()
    assert log.count('interrupted (SIGUSR2)') == 1 and 'resuming at epoch' in log, log[-2000:]
    whole = str(tmp_path / 'whole')
    assert train.main(['--data-dir', data_dir, '--out', whole, '--quiet'] +
                      [f'--{k.replace("_", "-")}={v}' for k, v in flags.items()]) == 0
    a, b = np.load(os.path.join(whole, 'checkpoint.npz')), np.load(os.path.join(run_dir, 'checkpoint.npz'))
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith(('param/', 'buffer/')))
    timeless = lambda path: [{k: v for k, v in json.loads(line).items() if k not in ('seconds', 'images_per_s')}  # noqa: E731
                             for line in open(os.path.join(path, 'metrics.jsonl'))]
    assert timeless(whole) == timeless(run_dir) and len(timeless(run_dir)) == 6


def fake_run(folder, config, val, test, seed=0):
    """A finished run as train.py leaves it: config.json and summary.json."""
    import reproduce as r
    config = dict(config, seed=seed, val_size=5000)
    run_dir = folder / r.run_name(config)
    run_dir.mkdir(parents=True)
    (run_dir / 'config.json').write_text(json.dumps(config))
    (run_dir / 'summary.json').write_text(json.dumps(dict(best_val_acc=val, selected_test_acc=test, final_test_acc=0.0,
                                                          train_acc=0.9, weights_total=1000,
                                                          layers={'1.W': dict(nonzero=1, size=2)})))


def test_report_selects_on_validation_and_sets_ours_beside_the_paper(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, 'RUNS', str(tmp_path))
    folder = tmp_path / 'fig5'
    for seed, (good, bad) in enumerate(((0.90, 0.80), (0.92, 0.70))):
        fake_run(folder, dict(arch='resnet18', dataset='cifar10', kernel_size=9, beta=50, lam_conv=1e-5), 0.5, good, seed)
        fake_run(folder, dict(arch='resnet18', dataset='cifar10', kernel_size=9, beta=50, lam_conv=2e-5), 0.4, bad, seed)
    fake_run(folder, dict(arch='resnet18', dataset='cifar10', kernel_size=9), 0.3, 0.85)
    text = reproduce.report('fig5', str(folder))
    row = next(line for line in text.splitlines() if line.startswith('| cifar10 | beta-LASSO |'))
    assert '91.00 ± 1.41 (4 runs, 2 seeds) [93.6]' in row  # the higher-validation run per seed, not the higher-test one
    row = next(line for line in text.splitlines() if line.startswith('| cifar10 | SGD |'))
    assert '85.00 (1 run, 1 seed) [92.6]' in row
    assert (folder / 'fig5.png').exists() and (folder / 'report.md').read_text() == text


def test_cpu_claim_report_gives_the_difference_per_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, 'RUNS', str(tmp_path))
    folder = tmp_path / 'cpu-claim'
    base = dict(arch='s_fc', dataset='cifar10', alpha=4, train_size=5000, epochs=400, augment='basic')
    fake_run(folder, base, 0.50, 0.52)  # SGD
    fake_run(folder, dict(base, beta=50, lr=1.0, lam_conv=1e-5, lam_fc=1e-6), 0.55, 0.56)
    fake_run(folder, dict(base, beta=50, lr=1.0, lam_conv=5e-5, lam_fc=5e-6), 0.54, 0.60)  # better test, worse val
    # the same cell with Fast AutoAugment is a row of its own, not a competitor in selection
    fake_run(folder, dict(base, augment='faa'), 0.60, 0.58)
    fake_run(folder, dict(base, augment='faa', beta=50, lr=1.0, lam_conv=5e-5, lam_fc=5e-6), 0.61, 0.57)
    text = reproduce.report('cpu-claim', str(folder))
    row = next(line for line in text.splitlines() if line.startswith('| 5,000 | 4 | crop + flip |'))
    assert '| 52.00 (1 run, 1 seed) | 56.00 (2 runs, 1 seed) | +4.00 (1 pair: no interval) |' in row
    assert row.endswith('| 1e-05 |')
    row = next(line for line in text.splitlines() if line.startswith('| 5,000 | 4 | Fast AutoAugment |'))
    assert '| 58.00 (1 run, 1 seed) | 57.00 (1 run, 1 seed) | -1.00 (1 pair: no interval) |' in row
    assert row.endswith('| 5e-05 |')
    assert (folder / 'gap.png').exists()


def test_length_probe_sets_the_longer_runs_beside_cpu_claims_cell(tmp_path):
    """The 400-epoch runs share cpu-claim's folder: they are rows of length-probe and never compete in
    cpu-claim's selection, where they would win on validation."""
    folder = tmp_path / 'cpu-claim'
    base = dict(arch='s_fc', dataset='cifar10', alpha=4, train_size=None, augment='basic')
    lasso = dict(beta=50, lr=1.0, lam_conv=2e-5, lam_fc=2e-6)
    for seed in (0, 1):
        fake_run(folder, dict(base, epochs=100), 0.60, 0.64 + 0.01 * seed, seed)
        fake_run(folder, dict(base, epochs=100, **lasso), 0.60, 0.63 + 0.01 * seed, seed)
    fake_run(folder, dict(base, epochs=400), 0.70, 0.66)
    fake_run(folder, dict(base, epochs=400, **lasso), 0.71, 0.67)
    fake_run(folder, dict(base, epochs=400, augment='faa'), 0.9, 0.9)  # another augmentation: not a row
    text = reproduce.report('length-probe', str(folder))
    assert '| 100 | 64.50 ± 0.71 (2 runs, 2 seeds) | 63.50 ± 0.71 (2 runs, 2 seeds) | -1.00 ± 0.00 (2 pairs) |' in text
    assert '| 400 | 66.00 (1 run, 1 seed) | 67.00 (1 run, 1 seed) | +1.00 (1 pair: no interval) |' in text
    assert (folder / 'report-length-probe.md').read_text() == text
    row = next(line for line in reproduce.report('cpu-claim', str(folder)).splitlines()
               if line.startswith('| 45,000 | 4 | crop + flip |'))
    assert '| 64.50 ± 0.71 (2 runs, 2 seeds) | 63.50 ± 0.71 (2 runs, 2 seeds) |' in row


def test_paired_differences_and_their_interval(tmp_path):
    """beta-LASSO minus SGD paired by seed, with a 95% t-interval worked by hand: differences
    1, 2, 3 have mean 2, sd 1 and half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.48."""
    folder = tmp_path / 'cpu-claim'
    base = dict(arch='s_fc', dataset='cifar10', alpha=8, train_size=10000, epochs=300, augment='basic')
    lasso = dict(base, beta=50, lr=1.0, lam_conv=1e-4, lam_fc=1e-5)
    for seed, (sgd, diff) in enumerate(((0.50, 0.01), (0.55, 0.02), (0.52, 0.03))):
        fake_run(folder, base, 0.5, sgd, seed)
        fake_run(folder, lasso, 0.5, sgd + diff, seed)
    fake_run(folder, base, 0.5, 0.9, 3)  # a seed without its pair is left out of the difference
    cells = reproduce.select('cpu-claim', reproduce.read_runs('cpu-claim', str(folder)))
    mean, half, pairs = reproduce.paired_difference(cells[(10000, 8, 'basic', 'beta-LASSO')],
                                                    cells[(10000, 8, 'basic', 'SGD')])
    assert (round(mean, 6), round(half, 2), pairs) == (2.0, 2.48, 3)
    assert reproduce.difference_text((mean, half, pairs)) == '+2.00 ± 2.48 (3 pairs, not established)'
    assert reproduce.difference_text((2.5, 1.24, 3)) == '+2.50 ± 1.24 (3 pairs)'


def test_table2_cpu_report_sets_the_rows_side_by_side(tmp_path):
    folder = tmp_path / 'cpu-claim'
    base = dict(dataset='cifar10', alpha=8, train_size=10000, epochs=300, augment='basic')
    for seed in (0, 1):
        fake_run(folder, dict(base, arch='s_fc'), 0.5, 0.50 + 0.01 * seed, seed)
        fake_run(folder, dict(base, arch='s_fc', beta=50, lr=1.0, lam_conv=1e-4, lam_fc=1e-5), 0.5, 0.55 + 0.01 * seed, seed)
        fake_run(folder, dict(base, arch='s_local'), 0.5, 0.60 + 0.01 * seed, seed)
        fake_run(folder, dict(base, arch='s_conv'), 0.5, 0.70 + 0.01 * seed, seed)
    fake_run(folder, dict(base, arch='s_fc', train_size=5000), 0.9, 0.99)  # another cell of cpu-claim: not a row
    text = reproduce.report('table2-cpu', str(folder))
    assert (folder / 'report-table2-cpu.md').read_text() == text
    row = next(line for line in text.splitlines() if line.startswith('| s_fc | SGD |'))
    assert '| 50.50 ± 0.71 (2 runs, 2 seeds) |' in row and row.endswith('| 78.63 |')
    assert 'paired by seed: +5.00 ± 0.00 (2 pairs) (the paper: +6.56)' in text
    assert 'to S-LOCAL (+10.00 points; the paper +7.23), beta-LASSO closes 50% (the paper: 91%)' in text
    assert 'to S-CONV (+20.00 points; the paper +8.42), beta-LASSO closes 25%' in text
    assert '| three_fc | SGD | — |' in text


def test_permutation_report_sets_the_permuted_run_beside(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, 'RUNS', str(tmp_path))
    folder = tmp_path / 'permutation'
    base = dict(arch='s_conv', dataset='cifar10', alpha=4, epochs=10)
    fake_run(folder, base, 0.5, 0.47)
    fake_run(folder, dict(base, permute_pixels=True), 0.4, 0.45)
    text = reproduce.report('permutation', str(folder))
    assert '| s_conv | SGD | cifar10 | 47.00 (1 run, 1 seed) | 45.00 (1 run, 1 seed) | 1 of 2 |' in text
    assert 'brackets' not in text


def test_a_stopped_grid_checkpoints_and_the_same_command_continues(tiny_experiment, data_dir, tmp_path, monkeypatch):
    """SIGTERM to the launcher (as `kill`, or Ctrl-C): no new run starts, the running ones get one
    SIGTERM, checkpoint and stop, nothing is counted as failed; the same command resumes them
    (test_an_interrupted_run_is_resumed_by_the_next_command)."""
    for run in tiny_experiment:
        run['epochs'] = 3000  # far more than the test waits for
    real_popen, started, out_dirs = reproduce.subprocess.Popen, [], []

    def stop_when_both_train():
        deadline = time.time() + 120
        while not all(os.path.exists(os.path.join(d, 'metrics.jsonl')) and os.path.getsize(os.path.join(d, 'metrics.jsonl'))
                      for d in out_dirs):
            assert time.time() < deadline
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        out_dirs.append(args[0][args[0].index('--out') + 1])
        if len(started) == 2:  # both slots busy: stop the grid once both have finished an epoch
            threading.Thread(target=stop_when_both_train, daemon=True).start()
        return started[-1]
    monkeypatch.setattr(reproduce.subprocess, 'Popen', popen)
    assert reproduce.main(['run', 'tiny', '--jobs', '2', '--data-dir', data_dir]) == 130
    assert len(started) == 2 and all(p.returncode == 130 for p in started)
    folder = tmp_path / 'runs' / 'tiny'
    stopped = [n for n in os.listdir(folder) if (folder / n / 'checkpoint.npz').exists()]
    assert len(stopped) == 2 and not any((folder / n / 'summary.json').exists() for n in stopped)


def test_the_local_launcher_skips_a_run_another_process_writes(tiny_experiment, data_dir, tmp_path, capsys):
    import fcntl
    held = os.path.join(str(tmp_path / 'runs' / 'tiny'), reproduce.run_name(dict(tiny_experiment[0], seed=0)))
    os.makedirs(held)
    with open(os.path.join(held, 'lock'), 'a+') as lock:  # as a train.py writing it holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write('4242\n')
        lock.flush()
        assert reproduce.main(['run', 'tiny', '--jobs', '2', '--data-dir', data_dir]) == 1
    out = capsys.readouterr().out
    assert f'skipped, another process is writing it: {held} (pid 4242)' in out
    assert not reproduce.is_done(held) and not os.path.exists(os.path.join(held, 'train.log'))
    assert sum(reproduce.is_done(str(tmp_path / 'runs' / 'tiny' / n)) for n in os.listdir(tmp_path / 'runs' / 'tiny')) == 3


def test_locality_grid_runs_imp_through_prune_py():
    runs = reproduce.grid('locality', 'cpu')
    assert len(runs) == 50 and [r['seed'] for r in runs[:12]] == [0] * 12  # one whole seed first
    extra = runs[36:]  # then beta-LASSO alone on NLGP g 3 and its twin, seeds 3-9
    assert sorted({r['seed'] for r in extra}) == list(range(3, 10)) and all(r['beta'] == 50 for r in extra)
    assert sorted({r['dataset'] for r in extra}) == ['nlgp', 'nlgp-gaussian'] and {r['nlgp_gain'] for r in extra} == {3.0}
    imp = [r for r in runs if 'imp_rounds' in r]
    assert len(imp) == 12
    command = reproduce.train_command(imp[0], 'runs/x', 'data')
    assert command[1].endswith('prune.py') and command[2:8] == ['--rounds', '4', '--fraction', '0.8', '--first-layer-only', '--out']
    train_flags = command[command.index('--') + 1:]
    assert '--out' not in train_flags and not any(f.startswith('--imp') for f in train_flags)
    assert train_flags[-2:] == ['--data-dir', 'data'] and '--nlgp-gain' in train_flags
    flops, _ = reproduce.cost([imp[0]])
    assert flops == pytest.approx(4 * reproduce.cost([{k: v for k, v in imp[0].items() if not k.startswith('imp')}])[0])


def test_locality_report_sets_methods_side_by_side(tmp_path):
    folder = tmp_path / 'locality'
    for seed in (0, 1):
        for data_label, data_flags in list(reproduce.LOCALITY_DATA.items())[1:3]:
            for name, method_flags in reproduce.LOCALITY_METHODS.items():
                config = dict(arch='s_fc', alpha=2, epochs=20, seed=seed, val_size=5000, **data_flags, **method_flags)
                run_dir = folder / reproduce.run_name(config)
                run_dir.mkdir(parents=True)
                local = name != 'SGD' and data_label == 'NLGP g 3'
                summary = dict(best_val_acc=0.9, selected_test_acc=0.9 + 0.01 * seed, final_test_acc=0.9, train_acc=1.0,
                               layers={'1.W': dict(nonzero=10, size=1000)}, seconds=120.0 * (1 + seed),
                               locality_score=0.8 if local else 0.1, inverse_participation_ratio=0.05 if local else 0.001,
                               shuffled_locality=0.3 if name != 'SGD' else 0.1)
                (run_dir / 'config.json').write_text(json.dumps(config))
                (run_dir / 'summary.json').write_text(json.dumps(summary))
    text = reproduce.report('locality', str(folder))
    row = next(line for line in text.splitlines() if line.startswith('| NLGP g 3 | IMP |'))
    assert row == '| NLGP g 3 | IMP | 90.50 ± 0.71 (2 runs, 2 seeds) | 100.0 | 1.00% | 0.80 | 0.30 | 0.050 | 2.0 |'  # the fastest seed's 2 minutes
    row = next(line for line in text.splitlines() if line.startswith('| Gaussian twin of g 3 | beta-LASSO |'))
    assert '| 0.10 | 0.30 | 0.001 |' in row
    assert '| NLGP g 0.3 | SGD | — |' in text  # a planned cell with no run
    assert ('- beta-LASSO: locality +0.70 ± 0.00 (2 pairs) (its excess over the shuffled weights\' +0.70 ± 0.00 (2 pairs)), '
            'inverse participation ratio +0.049 ± 0.000 (2 pairs)') in text
    assert '- SGD: locality +0.00 ± 0.00 (2 pairs, not established)' in text
    assert not (folder / 'locality.png').exists()  # no checkpoints: no picture drawn
    one = next(folder.glob('s_fc-nlgp-a2-e20-g3-*imp*-s1')) / 'summary.json'
    one.write_text(json.dumps({k: v for k, v in json.loads(one.read_text()).items() if k != 'shuffled_locality'}))
    row = next(line for line in reproduce.report('locality', str(folder)).splitlines() if line.startswith('| NLGP g 3 | IMP |'))
    assert '| 0.30 (1 of 2 seeds) |' in row  # a figure some seeds lack says so
