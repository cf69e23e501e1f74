import pytest

from botnet.compat import restore_ieee_denormals


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
