"""reproduce.py's Slurm launcher on a real Slurm: the single-node cluster .ci/slurm starts (CI runs
it before the tests). A grid of two tiny runs goes through `reproduce.py run --launcher slurm` with
a one-minute time limit, so every run is signalled, checkpoints and is requeued more than three
times (submitit's own cap is 3), and each still ends where an uninterrupted run ends."""
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import reproduce
from fixtures import make_extracted_cifar10


def ask(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ''


def slurm_missing():
    """Why the Slurm tests cannot run here, or None."""
    if not re.search(r'ClusterName\s*=\s*blasso-ci\b', ask('scontrol', 'show', 'config')):
        return 'needs the single-node Slurm that .ci/slurm starts (as root)'
    if not re.match(r'(idle|mix|alloc)', ask('sinfo', '-h', '-p', 'debug', '-o', '%t')):
        return "Slurm's node is not up (sinfo -p debug)"
    return None


MISSING = slurm_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

# slurmctld tests the jobs' time limits, and sends the signals that fall due, every 30 s (compiled
# in): with --time 1 and --signal-delay 25, a job is signalled at the first test at least 5 s
# after it starts. A requeued job is allocated cred_expire + 1 s after its requeue (.ci/slurm: 15 s),
# so each slice of a run starts that long after one test, trains once submitit and train.py have
# started, and is signalled at the next test.
TICK, SIGNAL_DELAY, START_UP = 30, 25, 2.5
RUN_SLICES = 5  # a run trains as long as this many slices: more than 4, so 4 requeues or more
FLAGS = dict(arch='s_fc', dataset='cifar10', alpha=2, batch_size=10, val_size=40, augment='none')
ENV = dict(OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')  # the same sums in every run


def train_two(folder, data_dir, run):
    """Seeds 0 and 1 of a run at once, uninterrupted, as the grid runs them; their directories."""
    outs = [os.path.join(folder, reproduce.run_name(dict(run, seed=seed))) for seed in (0, 1)]
    processes = [subprocess.Popen([sys.executable, os.path.join(reproduce.ROOT, 'train.py'), '--data-dir', data_dir,
                                   '--out', out, '--quiet', '--seed', str(seed)] +
                                  [f'--{k.replace("_", "-")}={v}' for k, v in run.items()],
                                  env=dict(os.environ, **ENV), stdout=subprocess.DEVNULL)
                 for seed, out in enumerate(outs)]
    assert [p.wait() for p in processes] == [0, 0]
    return outs


def probe_time_limit_test(stamp):
    """A job that asks to be signalled 28 s before its one-minute limit, so at the first
    time-limit test 2 s or more after it starts, and writes down when. Returns its id."""
    return subprocess.run(['sbatch', '--parsable', '--partition', 'debug', '--time', '1', '--signal', f'B:USR2@{TICK - 2}',
                           '--output', os.devnull, '--wrap', f'trap "date +%s.%N > {stamp}; exit 0" USR2; sleep 100 & wait'],
                          capture_output=True, text=True, check=True).stdout.strip()


def wait_until_after_a_test(stamp, probe, seconds):
    """Sleep until `seconds` after a time-limit test, from the probe's time of one."""
    while not stamp.exists() or not stamp.read_text().strip():
        assert ask('squeue', '-h', '-j', probe).strip(), f'the probe job {probe} ended unsignalled'
        time.sleep(0.1)
    tick = float(stamp.read_text())
    while tick + seconds < time.time():
        tick += TICK
    time.sleep(tick + seconds - time.time())


def wait_for_the_grid(array, folders, log_dir, deadline):
    while not all((folder / 'summary.json').exists() for folder in folders):
        logs = {str(path): path.read_text().splitlines()[-2:] for path in log_dir.glob(f'{array}_*_0_log.out')}
        assert ask('squeue', '-h', '-j', array).strip(), f'job array {array} ended with a run unfinished: {logs}'
        assert time.time() < deadline, f'job array {array} is still running: {logs}'
        time.sleep(1)


def timeless(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in ('seconds', 'images_per_s')}
            for line in open(os.path.join(run_dir, 'metrics.jsonl'))]


def test_a_grid_through_slurm_is_requeued_past_submitits_cap_and_ends_as_uninterrupted(tmp_path, monkeypatch, capsys):
    stamp = tmp_path / 'tick'
    probe = probe_time_limit_test(stamp)  # signalled while the runs below train
    (tmp_path / 'data').mkdir()
    data_dir = make_extracted_cifar10(str(tmp_path / 'data'))
    # an epoch's time, two runs at once, so that a run lasts RUN_SLICES slices on any machine:
    # one of the faster epochs, as a busy machine may be quieter by the time the grid runs
    outs = train_two(str(tmp_path / 'calibration'), data_dir, dict(FLAGS, epochs=30))
    epoch_s = np.percentile([line['seconds'] for out in outs for line in map(json.loads, open(f'{out}/metrics.jsonl'))], 10)
    start = int(re.search(r'cred_expire=(\d+)', ask('scontrol', 'show', 'config')).group(1)) + 1.5
    run = dict(FLAGS, epochs=math.ceil(RUN_SLICES * (TICK - start - START_UP) / epoch_s))
    wholes = train_two(str(tmp_path / 'whole'), data_dir, run)  # uninterrupted; before the grid, not beside it

    monkeypatch.setitem(reproduce.EXPERIMENTS, 'tiny-slurm', lambda scale: [run])
    monkeypatch.setitem(reproduce.CELLS, 'tiny-slurm', lambda c: (c['arch'], reproduce.method(c)))
    monkeypatch.chdir(reproduce.ROOT)  # the jobs run where they were submitted, and import reproduce there
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)  # sbatch passes the environment on to the jobs
    runs_dir = tmp_path / 'runs'
    wait_until_after_a_test(stamp, probe, start)  # the grid starts as a requeued slice does
    capsys.readouterr()
    assert reproduce.main(['run', 'tiny-slurm', '--seeds', '2', '--runs-dir', str(runs_dir), '--data-dir', data_dir,
                           '--launcher', 'slurm', '--partition', 'debug', '--gpus-per-run', '0', '--cpus-per-run', '1',
                           '--time', '1', '--signal-delay', str(SIGNAL_DELAY), '--max-parallel', '2']) == 0
    array = re.search(r'job array (\d+)', capsys.readouterr().out).group(1)
    folders = [runs_dir / 'tiny-slurm' / os.path.basename(whole) for whole in wholes]
    try:
        wait_for_the_grid(array, folders, runs_dir / 'slurm', deadline=time.time() + 3 * TICK * RUN_SLICES)
    finally:
        subprocess.run(['scancel', array, probe])

    for whole, folder in zip(wholes, folders):
        log = (folder / 'train.log').read_text()
        requeues = log.count('interrupted (SIGUSR2)')
        assert requeues > 3 and log.count('resuming at epoch') >= requeues, log[-3000:]
        a, b = np.load(os.path.join(whole, 'checkpoint.npz')), np.load(folder / 'checkpoint.npz')
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith(('param/', 'buffer/'))), folder
        assert timeless(whole) == timeless(folder) and len(timeless(folder)) == run['epochs'], folder
    assert reproduce.main(['report', 'tiny-slurm', '--runs-dir', str(runs_dir)]) == 0
    assert '2 finished runs' in capsys.readouterr().out
