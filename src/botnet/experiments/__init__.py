"""The paper's experiments as commands: sweeps of ``botnet train`` runs over a recipe
(``botnet experiment run SPEC --output DIR``), launched on this machine, under torchrun or as a
SLURM job array, and reported beside the paper's numbers (``botnet experiment report DIR``).

- ``spec``: the YAML spec (base recipe, overrides, runs, grid) and the shipped specs (``specs/``);
- ``runner``: the plan in the output folder, each run's state, the local and torchrun launchers;
- ``slurm``: the submitit job array, requeued on preemption (imported only when used);
- ``report``: report.md, report.csv and the speed-accuracy plot.
"""

from .spec import SPEC_DIR, Experiment, RunSpec, SpecError, find_spec, list_specs, load_spec, parse_spec

__all__ = ["SPEC_DIR", "Experiment", "RunSpec", "SpecError", "find_spec", "list_specs", "load_spec", "parse_spec"]
