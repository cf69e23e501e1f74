"""Loaded by every Python process whose PYTHONPATH starts with this folder (the training processes
the experiment and SLURM tests launch through `botnet experiment run`, submitit and sbatch).

With ``BOTNET_TEST_HOLD=FILE`` set, a training process that logs the step record of step N, where
FILE holds N, waits there while FILE exists: the test then kills, requeues or signals a run at a
known step, and deletes FILE to let it go on. The engine itself is not modified."""

import os

_hold = os.environ.get("BOTNET_TEST_HOLD")
if _hold:
    import time

    from botnet.engine import metrics

    _real_log = metrics.MetricsLogger.log

    def _log(self, rec):
        _real_log(self, rec)
        if rec.get("kind") != "step":
            return
        try:
            step = int(open(_hold).read().strip() or -1)
        except (OSError, ValueError):
            return
        while rec["step"] == step and os.path.exists(_hold):
            time.sleep(0.05)

    metrics.MetricsLogger.log = _log
