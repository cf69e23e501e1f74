"""`botnet experiment run --launcher slurm` on the local cluster: a job array through submitit; one
run gets submitit's preemption signal midway (SIGUSR2, as before a time limit or a preemption),
checkpoints, is requeued and resumes; the report equals the uninterrupted local sweep's."""

import json
import subprocess

from sweeps import child_env, experiment, logged_step, report_rows, sweep_spec, wait_for
from slurm_cluster import job_state, needs_slurm, release_requeued, wait_gone


@needs_slurm
def test_slurm_job_array_preempted_run_is_requeued_and_matches(reference_sweep, tiny_data, tmp_path):
    _, expected = reference_sweep
    spec, out, hold = sweep_spec(tiny_data, tmp_path / "sweep.yaml"), tmp_path / "out", tmp_path / "hold"
    hold.write_text("3")
    proc = experiment("run", spec, "--output", out, "--launcher", "slurm", "--cpus-per-task", 1, env=child_env(hold))
    assert proc.returncode == 0 and "submitted 2 run(s) as SLURM job array" in proc.stderr, proc.stderr[-3000:]
    jobs = json.loads((out / "slurm_jobs.json").read_text())
    try:
        wait_for(lambda: logged_step(out / "rel", 3), timeout=300, what="step 3 of run rel")
        again = experiment("run", spec, "--output", out, "--launcher", "slurm")  # queued runs are not submitted twice
        assert again.returncode == 0 and "rel: already queued" in again.stderr and "submitted" not in again.stderr
        subprocess.run(["scancel", "--signal=USR2", jobs["rel"]], check=True)  # submitit: checkpoint and requeue
        release_requeued(jobs["rel"], hold)
        wait_gone(list(jobs.values()))
    finally:
        for j in jobs.values():
            if job_state(j):
                subprocess.run(["scancel", j])
    log = (out / "rel" / "train.log").read_text()
    assert "resuming from" in log
    assert report_rows(out) == expected
