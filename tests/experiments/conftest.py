"""The sweep of ``sweeps.sweep_spec`` run once uninterrupted (``reference_sweep``), for the tests
that interrupt the same sweep and compare reports."""

from pathlib import Path

import pytest

from sweeps import experiment, report_rows, sweep_spec


@pytest.fixture(scope="session")
def reference_sweep(tiny_data, tmp_path_factory) -> tuple[Path, list[dict]]:
    """(spec, report rows) of the sweep run uninterrupted."""
    root = tmp_path_factory.mktemp("reference_sweep")
    spec = sweep_spec(tiny_data, root / "sweep.yaml")
    proc = experiment("run", spec, "--output", root / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return spec, report_rows(root / "out")
