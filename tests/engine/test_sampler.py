"""The global-batch sampler: the same global batches whatever the devices x accumulation split."""

import pytest
import torch

from botnet.engine.sampler import GlobalBatchSampler, SeededDataset, shard_indices


def _steps(world, accum, epoch=0, start=0, n=40, batch=8):
    per_rank = []
    for r in range(world):
        s = GlobalBatchSampler(n, batch, world, r, accum, seed=3)
        s.set_epoch(epoch, start)
        per_rank.append(list(s))
    # regroup into optimizer steps: micro-batch j of a step is rank j % world, accumulation j // world
    steps = []
    for k in range(len(per_rank[0]) // accum):
        micro = [per_rank[j % world][k * accum + j // world] for j in range(world * accum)]
        steps.append(micro)
    return steps


def test_same_global_batches_for_any_split():
    ref = _steps(1, 4)
    assert _steps(2, 2) == ref and _steps(4, 1) == ref
    flat = [i for step in ref for micro in step for i, _ in micro]
    assert len(flat) == len(set(flat)) == 40  # each sample once per epoch


def test_epochs_differ_and_resume_skips_steps():
    assert _steps(1, 1, epoch=0) != _steps(1, 1, epoch=1)
    assert _steps(2, 1, epoch=1, start=2) == _steps(2, 1, epoch=1)[2:]
    s = GlobalBatchSampler(40, 8, 1, 0, 2)
    s.set_epoch(0, 3)
    assert len(s) == (5 - 3) * 2


def test_errors():
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(40, 8, 3, 0, 1)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(4, 8, 1, 0, 1)


def test_seeded_dataset_is_a_function_of_seed():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(2) + i

    ds = SeededDataset(Noise())
    torch.testing.assert_close(ds[(1, 42)], ds[(1, 42)])
    assert not torch.equal(ds[(1, 42)], ds[(1, 43)])
    state = torch.get_rng_state()
    ds[(0, 5)]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_shard_indices_cover_once():
    parts = [shard_indices(10, 3, r) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(10))
