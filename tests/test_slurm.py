"""docs/training.md's SLURM script, scaled to this machine (docs/examples/train_demo.sbatch: one
node, 2 CPU processes under torchrun with gloo, the demo recipe), run on the local cluster: requeued
midway with `scontrol requeue`, it resumes and ends with the evaluation of an uninterrupted job."""

import json
import os
import subprocess
import sys
from pathlib import Path

from sweeps import child_env, logged_step, wait_for
from runs import free_port
from slurm_cluster import job_state, needs_slurm, release_requeued, wait_gone

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "docs" / "examples" / "train_demo.sbatch"
EXTRA = ("model.name=botnet_tiny data.img_size=32 data.workers=0 optim.batch_size=16 optim.epochs=2 run.max_steps=6 "
         "run.eval_every=100 run.log_every=1 run.ckpt_every_steps=1 run.amp=none")


def test_the_docs_show_the_script_that_runs():
    assert SCRIPT.read_text() in (ROOT / "docs" / "training.md").read_text()


def _sbatch(out: Path, data: str, hold: Path | None) -> str:
    env = child_env(hold, OUTPUT=str(out), DATA=data, EXTRA=EXTRA, RDZV_PORT=str(free_port()),
                    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    res = subprocess.run(["sbatch", "--parsable", "-o", f"{out}.slurm.out", str(SCRIPT)], env=env,
                         capture_output=True, text=True, check=True)
    return res.stdout.strip().split(";")[0]


def _final_eval(out: Path) -> dict:
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "eval"][-1]


@needs_slurm
def test_sbatch_script_requeued_midway_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    hold = tmp_path / "hold"
    hold.write_text("3")
    requeued, plain = tmp_path / "requeued", tmp_path / "plain"
    job = _sbatch(requeued, tiny_data, hold)
    ref = _sbatch(plain, tiny_data, None)  # queued behind the first (the node has 2 CPUs)
    try:
        wait_for(lambda: logged_step(requeued, 3), timeout=300, what="step 3 of the job")
        subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM to the job: step 3 saved, exit
        release_requeued(job, hold)
        wait_gone([job, ref])
    finally:
        for j in (job, ref):
            if job_state(j):
                subprocess.run(["scancel", j])
    log = Path(f"{requeued}.slurm.out").read_text()
    assert "restart 0" in log and "restart 1" in log and "resuming from" in log, log[-3000:]
    assert "x 2 devices" in log
    assert _final_eval(requeued) == _final_eval(plain)
    assert _final_eval(plain)["step"] == 6
