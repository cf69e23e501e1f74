import os

import pytest
from hypothesis import HealthCheck, settings

from botnet.compat import restore_ieee_denormals

# Property tests: CI and `make test` run a fixed, derandomized set of examples, so a clean clone gives
# the same result on every run; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) draws 20x as many at random.
# Run `make fuzz` before you stop whenever you changed src/botnet/layers or src/botnet/models.
CI_EXAMPLES = 100
FUZZ_FACTOR = 20
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=CI_EXAMPLES * FUZZ_FACTOR, derandomize=False, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def ieee_denormals():
    """A test that ran a torch.compile'd model on torch 2.4 leaves flush-to-zero on (its inductor
    kernels are built with -ffast-math); later tests must not inherit it (hypothesis refuses to
    draw floats under it)."""
    yield
    restore_ieee_denormals()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small copy of the built-in shapes dataset: 10 classes x (8 train + 4 val) images."""
    from botnet.data import builtin_dataset_root

    return str(builtin_dataset_root(tmp_path_factory.mktemp("cache"), per_class_train=8, per_class_val=4))
