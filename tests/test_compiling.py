"""botnet.compiling: torch.compile with static shapes and the batch axis dynamic (model.compile: true).
Dynamo with the "eager" backend: the graphs and guards are the ones inductor gets, without its
code generation (tests/engine/test_train.py::test_torch_compile runs inductor through the trainer)."""

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from botnet.compat import TORCH_VERSION
from botnet.compiling import COMPILE_SHAPES, compile_model
from botnet.layers import MHSA2d


def _net() -> nn.Module:
    torch.manual_seed(0)
    return MHSA2d(8, num_heads=2, feat_size=4).eval()


def _graphs(model: nn.Module, batches) -> int:
    torch._dynamo.reset()
    counters.clear()
    for b in batches:
        x = torch.randn(b, 8, 4, 4)
        with torch.no_grad():
            torch.testing.assert_close(model(x), model._orig_mod(x), atol=1e-5, rtol=1e-5)
    return counters["stats"]["unique_graphs"]


@pytest.mark.skipif(TORCH_VERSION < (2, 5),
                    reason="torch 2.4's dynamo traces this for about 50 s on a 2-core machine (2 s on torch 2.14); "
                           "tests/engine/test_train.py::test_torch_compile compiles on both")
def test_batch_shapes_share_one_graph():
    """Batches 2, 3 and 5 (the last partial batch, evaluation batches) run one graph; "static"
    compiles one per batch size."""
    assert _graphs(compile_model(_net(), "batch", backend="eager"), (2, 3, 5)) == 1
    assert _graphs(compile_model(_net(), "static", backend="eager"), (2, 3)) == 2


def test_unknown_shapes_are_refused():
    assert COMPILE_SHAPES == ("batch", "static")
    with pytest.raises(ValueError, match="compile shapes must be one of batch, static, got 'dynamic'"):
        compile_model(_net(), "dynamic")
