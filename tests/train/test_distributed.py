"""recover and the training-time Pruner under DistributedDataParallel (2 CPU processes, gloo) equal the
single-process run of the same seed on the same global batches."""
import copy
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import secateurs as sc
from secateurs.prune.surgery import finalize
from secateurs.train import recover
from secateurs.train.distributed import (
    barrier,
    is_main,
    rank,
    same_on_every_rank,
    shard,
    world_size,
)
from secateurs.train.schedules import Polynomial

STEPS = 6


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8 * STEPS, 1, 40, generator=g)
    y = torch.randint(0, 10, (8 * STEPS,), generator=g)
    return x, [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(x), 8)]  # global batch 8


def _dense():
    torch.manual_seed(0)  # no batch norm: on CPU each rank would normalise its own share (SyncBatchNorm is GPU-only)
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 16, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv1d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 10, 10)).eval()


def _pruned():
    """The same pruned model on every rank: plan and masks are pure functions of model, inputs and seed."""
    model = _dense()
    x, _ = _data()
    structured = sc.plan(model, x[:8], 0.5, criterion="l2", scope="global")
    small = sc.apply(model, structured)
    masks = sc.plan(small, x[:8], 0.5, granularity="unstructured", scope="global")
    return sc.apply(small, masks, mode="mask"), structured, masks


def _finalized_state(model):
    return {k: v.detach().clone() for k, v in finalize(copy.deepcopy(model)).state_dict().items()}


# Data criteria score from the gradients the Pruner's hooks record, which DDP has not averaged yet:
# one with element masks, one with channel removals.
PRUNER_CASES = [{"granularity": "unstructured", "criterion": "taylor", "scope": "global"},
                {"granularity": "channel", "criterion": "movement", "scope": "global"}]


def _prune_while_training(case, wrap):
    """Train the dense model for STEPS steps of this rank's share while a Pruner prunes it."""
    model = _dense().train()
    x, batches = _data()
    schedule = Polynomial(0.0, 0.5, begin_step=2, end_step=STEPS, frequency=2)
    pruner = sc.Pruner(model, x[:8], schedule, **PRUNER_CASES[case])
    net = wrap(model)  # after the Pruner: DDP must see the masked weights' parameters
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    for xb, yb in shard(batches):
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
    return model, pruner


def _recover_job(out):
    model, structured, masks = _pruned()
    same_on_every_rank(structured.to_json(), "plan")
    same_on_every_rank(masks.to_json(), "mask plan")
    _, batches = _data()
    ddp = DDP(model)
    recover(ddp, shard(batches), steps=STEPS, lr=1e-2, seed=0)
    if is_main():  # rank 0 alone writes
        torch.save(_finalized_state(model), f"{out}/ddp.pt")
        with open(f"{out}/plans.json", "w") as f:
            json.dump([structured.to_json(), masks.to_json()], f)


def _pruner_job(out):
    for case in range(len(PRUNER_CASES)):
        model, pruner = _prune_while_training(case, DDP)
        state = pruner.state_dict()
        same_on_every_rank((state["masks"], state["removed"]), f"Pruner {case} masks")
        if is_main():  # rank 0 alone writes the checkpoint
            torch.save({"pruner": state, "model": _finalized_state(model)}, f"{out}/pruner{case}.pt")
    with pytest.raises(TypeError, match="before wrapping it in DistributedDataParallel"):
        sc.Pruner(DDP(_dense()), _data()[0][:8], Polynomial(0.0, 0.5, begin_step=2, end_step=STEPS))


def _worker(r, world, init_file, out, job):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=world)
    try:
        assert (rank(), world_size(), is_main()) == (r, world, r == 0)
        {"recover": _recover_job, "pruner": _pruner_job}[job](out)
        barrier()
        try:
            same_on_every_rank(r, "rank")
        except RuntimeError as exc:
            assert "differs between rank 0 and rank(s) [1]" in str(exc)
        else:
            raise AssertionError("same_on_every_rank accepted different values")
        barrier()  # no rank tears its connections down while the other still reads from them
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, job):
    """Run ``job`` on 2 gloo ranks; returns the folder rank 0 wrote to."""
    out = tmp_path / "out"
    out.mkdir()
    for attempt in range(2):
        try:
            mp.spawn(_worker, args=(2, str(tmp_path / f"init{attempt}"), str(out), job), nprocs=2, join=True)
            return out
        except mp.ProcessExitedException as exc:  # a rank killed by a signal (gloo aborting under load), not a
            if attempt or exc.exit_code >= 0:       # failed assertion (that raises ProcessRaisedException)
                raise
            for f in out.iterdir():
                f.unlink()
    return out


def _assert_same_weights(single, ddp, n_weights):
    assert single.keys() == ddp.keys()
    moved = 0
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
        if v.is_floating_point() and k.endswith("weight") and v.dim() > 1:
            assert torch.equal(v == 0, ddp[k] == 0), k  # the same weights are pruned (exact zeros)
            moved += 1
    assert moved == n_weights


def test_recover_under_ddp_equals_single_process(tmp_path, one_thread):
    out = _spawn(tmp_path, "recover")
    assert sorted(p.name for p in out.iterdir()) == ["ddp.pt", "plans.json"]  # rank 0 wrote, once
    model, structured, masks = _pruned()
    assert json.loads((out / "plans.json").read_text()) == [structured.to_json(), masks.to_json()]
    _, batches = _data()
    recover(model, batches, steps=STEPS, lr=1e-2, seed=0)  # one process, the whole global batch
    _assert_same_weights(_finalized_state(model), torch.load(out / "ddp.pt"), 4)


def test_pruner_under_ddp_equals_single_process(tmp_path, one_thread):
    out = _spawn(tmp_path, "pruner")
    assert sorted(p.name for p in out.iterdir()) == [f"pruner{i}.pt" for i in range(len(PRUNER_CASES))]
    for case in range(len(PRUNER_CASES)):
        model, pruner = _prune_while_training(case, lambda m: m)  # one process, the whole global batch
        single, ddp = pruner.state_dict(), torch.load(out / f"pruner{case}.pt")
        assert single["step"] == ddp["pruner"]["step"] == STEPS
        assert single["masks"] == ddp["pruner"]["masks"] and single["removed"] == ddp["pruner"]["removed"]
        assert pruner.sparsity > 0.3  # the schedule did prune
        if single["scores"] is not None:  # movement scores, accumulated from the averaged gradients
            for n, s in single["scores"].items():
                torch.testing.assert_close(ddp["pruner"]["scores"][n], s, rtol=1e-4, atol=1e-7, msg=n)
        _assert_same_weights(_finalized_state(model), ddp["model"], 4)


def test_helpers_outside_a_process_group():
    assert (rank(), world_size(), is_main()) == (0, 1, True)
    same_on_every_rank("anything")
    barrier()
    batches = [(torch.arange(4), torch.arange(4))]
    shards = shard(batches)
    for _ in range(2):  # re-iterable, like the list it wraps
        ((x, y),) = list(shards)
        assert torch.equal(x, batches[0][0]) and torch.equal(y, batches[0][1])
    one_shot = shard(iter(batches))
    assert len(list(one_shot)) == 1 and list(one_shot) == []


def test_shard_needs_a_divisible_batch(monkeypatch):
    import secateurs.train.distributed as D
    monkeypatch.setattr(D, "world_size", lambda: 2)
    monkeypatch.setattr(D, "rank", lambda: 1)
    x = torch.arange(6)
    assert torch.equal(next(iter(D.shard([(x, x)])))[0], torch.tensor([3, 4, 5]))
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        list(D.shard([(torch.arange(5), 0)]))


@settings(max_examples=30, deadline=None)
@given(world=st.integers(1, 4), per_rank=st.integers(1, 5), n_batches=st.integers(1, 3))
def test_shards_of_all_ranks_make_up_each_batch(world, per_rank, n_batches):
    import secateurs.train.distributed as D
    batches = [({"x": torch.randn(world * per_rank, 3)}, torch.arange(world * per_rank)) for _ in range(n_batches)]
    parts = [list(D._Shards(batches, r, world)) for r in range(world)]
    for i, (inputs, targets) in enumerate(batches):
        assert torch.equal(torch.cat([p[i][0]["x"] for p in parts]), inputs["x"])
        assert torch.equal(torch.cat([p[i][1] for p in parts]), targets)
        assert all(len(p[i][1]) == per_rank for p in parts)
