"""Reading SLURM's queue (experiments/slurm.py: squeue, job_state, queued) against a fake ``squeue``
on PATH, so it runs without a cluster: a failed query (a busy slurmctld's socket timeout) must never
read as "nothing queued", or `botnet experiment run --launcher slurm` would submit a queued run twice."""

import json
import os
import stat

import pytest

pytest.importorskip("submitit")

from botnet.experiments import slurm  # noqa: E402
from sweeps import child_env, experiment, sweep_spec  # noqa: E402

TIMEOUT = "slurm_load_jobs error: Socket timed out on send/recv operation"


def fake_squeue(bin_dir, stdout: str = "", stderr: str = "", rc: int = 0, calls=None):
    """Put a ``squeue`` in ``bin_dir`` that prints ``stdout``/``stderr`` and exits ``rc``; each call
    appends a line to ``calls`` when given."""
    bin_dir.mkdir(exist_ok=True)
    log = f'echo "$@" >> {calls}\n' if calls else ""
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\n{log}printf '%s' '{stdout}'\nprintf '%s\\n' '{stderr}' >&2\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


@pytest.fixture
def path_with(monkeypatch, tmp_path):
    def put(**kw):
        monkeypatch.setenv("PATH", fake_squeue(tmp_path / "bin", **kw) + os.pathsep + os.environ["PATH"])
    return put


def _jobs_file(out, jobs):
    out.mkdir(parents=True, exist_ok=True)
    (out / "slurm_jobs.json").write_text(json.dumps(jobs))


def test_queued_keeps_only_the_jobs_squeue_lists(path_with, tmp_path):
    path_with(stdout="11_0\n12\n")
    _jobs_file(tmp_path / "out", {"rel": "11_0", "abs": "11_1"})
    assert slurm.queued(tmp_path / "out") == {"rel": "11_0"}


def test_a_failed_squeue_raises_after_retries_instead_of_reading_as_an_empty_queue(path_with, tmp_path):
    calls = tmp_path / "calls"
    path_with(stderr=TIMEOUT, rc=1, calls=calls)
    _jobs_file(tmp_path / "out", {"rel": "11_0"})
    with pytest.raises(slurm.SlurmQueryError, match="Socket timed out") as e:
        slurm.squeue(["-h"], attempts=3, pause_s=0)
    assert "\n" not in str(e.value)
    assert len(calls.read_text().splitlines()) == 3
    with pytest.raises(slurm.SlurmQueryError):
        slurm.queued(tmp_path / "out")


def test_job_state_reads_invalid_job_id_as_gone(path_with):
    path_with(stderr="slurm_load_jobs error: Invalid job id specified", rc=1)
    assert slurm.job_state("99") == ""


def test_job_state_of_a_queued_job(path_with):
    path_with(stdout="PENDING\n")
    assert slurm.job_state("11_0") == "PENDING"


def test_cli_stops_with_one_line_and_submits_nothing_when_squeue_fails(tiny_data, tmp_path):
    out, bin_dir = tmp_path / "out", tmp_path / "bin"
    _jobs_file(out, {"rel": "11_0", "abs": "11_1"})
    env = child_env()
    env["PATH"] = fake_squeue(bin_dir, stderr=TIMEOUT, rc=1) + os.pathsep + env["PATH"]
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path / 'sbatch_ran'}\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    proc = experiment("run", sweep_spec(tiny_data, tmp_path / "sweep.yaml"), "--output", out,
                      "--launcher", "slurm", env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "squeue failed" in lines[0] and "Socket timed out" in lines[0], proc.stderr
    assert not (tmp_path / "sbatch_ran").exists()
    assert json.loads((out / "slurm_jobs.json").read_text()) == {"rel": "11_0", "abs": "11_1"}
