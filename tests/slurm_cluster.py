"""The local SLURM cluster the SLURM tests submit to (.ci/slurm-setup.sh starts it): a skip marker
when there is none, and the few scontrol calls the tests make (squeue is read by botnet.experiments.slurm.job_state,
which retries a failed query and raises rather than read it as an empty queue)."""

import shutil
import subprocess
import time

import pytest

from botnet.experiments.slurm import job_state  # squeue's state of a job, "" once it has left the queue


def cluster_up() -> str | None:
    """None when jobs can be submitted here, else why not."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (no SLURM here; as root, .ci/slurm-setup.sh installs and starts a one-node cluster)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        return "slurmctld does not answer (start the cluster: .ci/slurm-setup.sh)"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
    if not set(nodes) & {"idle", "mixed", "allocated"}:
        return f"no SLURM node is up (sinfo: {' '.join(nodes) or 'nothing'}; see .ci/slurm-setup.sh)"
    return None


needs_slurm = pytest.mark.skipif(cluster_up() is not None, reason=str(cluster_up()))


def release_requeued(job: str, hold=None, timeout: float = 180.0) -> None:
    """Wait until ``job`` is back in the queue, delete the ``hold`` file (tests/hooks/sitecustomize.py),
    and start the job now: a requeued job would wait for its BeginTime (about two minutes)."""
    t0 = time.monotonic()
    while job_state(job) != "PENDING":
        assert time.monotonic() - t0 < timeout, f"job {job} did not go back to the queue"
        time.sleep(0.2)
    # A requeue revokes the job's credential on the node, and slurmd refuses a launch whose credential
    # was made in the same second as (or before) the revocation ("Killing non-startable batch JobId=..:
    # Job credential revoked": the job FAILS and leaves the queue). SLURM's own BeginTime (about two
    # minutes) keeps clear of that; starting it now must wait for the next second or two.
    time.sleep(2.5)
    if hold is not None:
        hold.unlink()
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)


def wait_gone(jobs: list[str], timeout: float = 600.0) -> None:
    t0 = time.monotonic()
    while any(job_state(j) for j in jobs):
        assert time.monotonic() - t0 < timeout, f"jobs {jobs} still queued after {timeout} s"
        time.sleep(0.5)
