"""tour.py runs as a script and prints what README says it prints."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_tour_runs_and_shows_locality_emerging(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'tour.py'), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [float(e) for e in re.findall(r'relative error against centred differences (\S+)', out)]
    assert len(errors) == 3 and max(errors) < 1e-8, errors  # dx, dW, db
    gaps = [float(g) for g in re.findall(r'max \|out - CONV\| (\S+)', out)]
    assert len(gaps) == 3 and max(gaps) < 1e-12, gaps  # FC, LOCAL and CONV: the same map
    assert 'after the threshold [ 0.949  0.    -0.081 -0.499  0.     0.1  ]' in out
    final = {m: (int(n.replace(',', '')), float(loc)) for m, n, loc in
             re.findall(r'(SGD|beta-LASSO) +epoch 12: .*non-zeros +([\d,]+), locality (\S+)', out)}
    (sgd_nonzero, sgd_locality), (lasso_nonzero, lasso_locality) = final['SGD'], final['beta-LASSO']
    assert sgd_nonzero == 3072 * 512 and sgd_locality < 0.15  # SGD keeps a dense, non-local layer
    assert 486 < lasso_nonzero < 124416 and lasso_locality > sgd_locality + 0.25  # between S-CONV and S-LOCAL, local
    for picture in ('SGD.png', 'beta-LASSO.png'):
        assert os.path.getsize(tmp_path / picture) > 0
