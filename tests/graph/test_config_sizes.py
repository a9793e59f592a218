"""Sizes a model reads from its config in forward (``torch.zeros(b, self.config.hidden_size)``, RWKV's state).

A whole model inside another (the base model of a ``...ForCausalLM``) has its config sizes followed like a
layer's: every read ties the dims it sizes into one group, a plan sets the size on that module's own copy of
the config, and the outermost model's config (what is saved and rebuilt) never changes. A config size also
read as a number, or a size read from the outermost model's config, keeps its dims, with the reason.
"""
import pytest
import torch
import transformers as T
from torch import nn

import secateurs as sc

pytestmark = pytest.mark.usefixtures("one_thread")

H, VOCAB = 16, 20


class _Config(T.PretrainedConfig):
    model_type = "secateurs_test_state"

    def __init__(self, hidden_size: int = H, vocab_size: int = VOCAB, extra: str = "state", **kw):
        self.hidden_size, self.vocab_size, self.extra = hidden_size, vocab_size, extra
        super().__init__(**kw)


class _Base(T.PreTrainedModel):
    """A residual stream of MLPs and a running state created at ``config.hidden_size`` in forward.

    ``extra`` picks what else the forward reads from the config: "state" nothing; "inner" a second tensor
    at ``hidden_size`` added to an inner width that happens to equal it (two groups by the layers alone);
    "pow" ``hidden_size ** 0.5`` scaling the embeddings and "mul" ``h * hidden_size`` (values, not sizes)."""

    config_class = _Config

    def __init__(self, config: _Config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.up = nn.ModuleList(nn.Linear(config.hidden_size, 2 * config.hidden_size) for _ in range(2))
        self.down = nn.ModuleList(nn.Linear(2 * config.hidden_size, config.hidden_size) for _ in range(2))
        self.mid = nn.Linear(config.hidden_size, config.hidden_size)  # an inner width equal to the residual's
        self.out = nn.Linear(config.hidden_size, config.hidden_size)  # the output is not the residual
        self.post_init()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        if self.config.extra == "pow":
            h = h * self.config.hidden_size ** 0.5
        elif self.config.extra == "mul":
            h = h * self.config.hidden_size
        state = torch.zeros(input_ids.shape[0], self.config.hidden_size)
        for up, down in zip(self.up, self.down):
            h = h + state[:, None] + down(torch.relu(up(h)))
            state = state + h[:, -1]
        inner = self.mid(h)
        if self.config.extra == "inner":
            inner = inner + torch.zeros(input_ids.shape[0], 1, self.config.hidden_size)
        return self.out(inner)


class _LM(T.PreTrainedModel):
    config_class = _Config

    def __init__(self, config: _Config):
        super().__init__(config)
        self.base = _Base(config)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(input_ids))


def _model(cls: type = _LM, extra: str = "state") -> nn.Module:
    torch.manual_seed(0)
    return cls(_Config(extra=extra)).eval()


def _residual(graph):
    return next((g for g in graph.groups if ("base.embed.weight", 1, "out") in g.tensors), None)


def _prune(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> tuple:
    """Plan and apply with the residual pruned; masks and surgery agree (no normalisation spans it)."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = sc.plan(model, x, ratio=ratio)
    small, masked = sc.apply(model, plan), sc.apply(model, plan, mode="mask")
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    return plan, small


def test_state_at_an_inner_whole_models_config_size_follows_the_residual(tmp_path):
    model, x = _model(), torch.randint(0, VOCAB, (1, 5))
    residual = _residual(sc.trace(model, x))
    assert residual is not None and residual.size == H
    plan, small = _prune(model, x)
    kept = H - len(plan.removals()[residual.id])
    assert 0 < kept < H
    assert {(s["module"], s["attr"]) for s in plan.syncs} == {("base", "config.hidden_size")}
    assert small.base.config.hidden_size == kept and small.base.embed.weight.shape == (VOCAB, kept)
    assert small.config.hidden_size == model.config.hidden_size == H  # the outermost config describes the base
    assert model.base.config is model.config and model.base.config.hidden_size == H
    sc.save(small, plan, tmp_path)  # a fresh model and the plan rebuild it, the inner config size included
    back = sc.load(_model(), tmp_path)
    assert back.base.config.hidden_size == kept
    with torch.no_grad():
        torch.testing.assert_close(back(x), small(x))


def test_reads_sizing_two_groups_tie_them():
    """``config.hidden_size`` sizes the residual and an inner width of the same size: one number for both,
    so they become one group and shrink together."""
    model, x = _model(extra="inner"), torch.randint(0, VOCAB, (1, 5))
    residual = _residual(sc.trace(model, x))
    assert residual is not None and ("base.mid.weight", 0, "out") in residual.tensors
    plan, small = _prune(model, x)
    kept = H - len(plan.removals()[residual.id])
    assert small.base.mid.weight.shape == (kept, kept) and small.base.config.hidden_size == kept


@pytest.mark.parametrize("extra", ["pow", "mul"])
def test_a_config_size_read_as_a_number_stays(extra):
    model, x = _model(extra=extra), torch.randint(0, VOCAB, (1, 5))
    graph = sc.trace(model, x)
    assert _residual(graph) is None
    assert any("config.hidden_size of base is also read as a number in base" in u.reason for u in graph.unsupported)


def test_the_outermost_models_config_size_stays():
    """The traced model's own config is what ``save_hf`` writes as the unpruned architecture: never set."""
    model, x = _model(_Base), torch.randint(0, VOCAB, (1, 5))
    graph = sc.trace(model, x)
    assert not any(("embed.weight", 1, "out") in g.tensors for g in graph.groups)
    assert any(u.reason.startswith("size of a tensor created in code in <model>") for u in graph.unsupported)
