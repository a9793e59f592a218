"""The candidate job is pure (same result twice, nothing outside it changed); interleaved latency; per-group jobs."""
import copy
import pickle

import torch

import secateurs as sc
from secateurs.examples import models
from secateurs.search import LocalExecutor, sensitivity
from secateurs.search.tasks import SweepContext, run_candidate
from secateurs.train import recover

X = torch.randn(32, 1, 40, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(2))


def _ctx(model, budget=3, keep_models=True):
    def evaluate(m):
        with torch.no_grad():
            return float((m.eval()(X).argmax(1) == Y).float().mean())

    def finetune(m, steps):
        return recover(m, [(X, Y)], steps=steps, seed=0)

    return SweepContext(model, X, evaluate, finetune, budget, seed=0, threads=1, latency=False, runs=2,
                        keep_models=keep_models)


def test_run_candidate_is_pure_and_its_result_survives_pickling(one_thread):
    model = models.mnist1d_cnn(channels=8, seed=0).eval()
    before = copy.deepcopy(model.state_dict())
    ctx = _ctx(model)
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    method = {"granularity": "channel", "criterion": "l2", "scope": "global", "ratio": 0.5}
    a = run_candidate(ctx, "c", method)
    b = run_candidate(ctx, "c", method)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is left as it was
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the base is untouched
    assert a.quality == b.quality and a.plan.to_json() == b.plan.to_json() and a.measurement == b.measurement
    assert a.measurement["params"] < sum(p.numel() for p in model.parameters())
    sent = pickle.loads(pickle.dumps(a))  # what a Ray worker sends back: the weights, not the module
    assert sent.model is None and sent.state is not None
    rebuilt = sent.rebuild(model)
    torch.testing.assert_close(rebuilt(X), a.model(X), rtol=0, atol=0)


def test_one_shot_candidate_in_a_concurrent_sweep_sends_no_model_and_rebuilds_from_its_plan():
    ctx = _ctx(models.mnist1d_cnn(channels=8, seed=0).eval(), budget=0, keep_models=False)
    r = run_candidate(ctx, "c", {"granularity": "channel", "criterion": "l2", "scope": "local", "ratio": 0.3})
    assert r.model is None and r.state is None
    rebuilt = r.rebuild(ctx.base)
    reference = sc.apply(ctx.base, r.plan)
    torch.testing.assert_close(rebuilt(X), reference(X), rtol=0, atol=0)


class Recording(LocalExecutor):
    def __init__(self):
        self.keys = []

    def run(self, fn, shared, jobs):
        self.keys.append([j.key for j in jobs])
        pickle.dumps((shared.graph, shared.model, shared.example_inputs))  # a remote executor ships these
        return super().run(fn, shared, jobs)


def test_sensitivity_runs_one_job_per_group(setup):
    model, x, evaluate, expected = setup
    ex = Recording()
    got = sensitivity(model, x, evaluate, quiet=True, executor=ex)
    assert ex.keys == [[g.label for g in expected.groups]]
    assert got.to_dict() == expected.to_dict()
