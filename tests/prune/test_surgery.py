"""Surgery's slicing: one gather over adjacent dims (large tensors) keeps what one index_select per dim keeps."""
import pytest
import torch

from secateurs.prune import surgery


@pytest.mark.parametrize("gather_once", [0, surgery.GATHER_ONCE])
def test_select_equals_one_index_select_per_dim(monkeypatch, gather_once):
    monkeypatch.setattr(surgery, "GATHER_ONCE", gather_once)  # 0: every tensor takes the one-gather path
    t = torch.randn(5, 6, 7, 8)
    cases = [[(1, torch.tensor([0, 2, 5])), (2, torch.tensor([1, 6]))],
             [(2, torch.tensor([0, 5, 6])), (0, torch.tensor([1, 4])), (1, torch.tensor([3]))],  # any order given
             [(3, torch.tensor([7, 0])), (1, torch.tensor([2, 3]))],  # not adjacent: one dim at a time
             [(0, torch.tensor([4]))]]
    for picks in cases:
        want = t
        for d, idx in picks:
            want = want.index_select(d, idx)
        got = surgery._select(t, picks)
        assert got.shape == want.shape and torch.equal(got, want) and got.is_contiguous()
