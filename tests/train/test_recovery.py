"""recover(): the fine-tune after pruning, with and without distillation (MNIST-1D CNN, a few seconds)."""
from __future__ import annotations

import copy
import itertools
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import secateurs as sc
from secateurs.train import recover
from secateurs.train.recovery import _kd_loss, _lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("mnist1d")
    from secateurs.examples import data
    return data.mnist1d()


@pytest.fixture(scope="module")
def dense(mnist):
    """The MNIST-1D CNN after 5 epochs (~90% test accuracy; ~4 s on one thread). Tests deep-copy it."""
    from secateurs.examples import fit, mnist1d_cnn
    x, y, _, _ = mnist
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(mnist1d_cnn(), x, y, epochs=5, lr=3e-3, batch_size=128, seed=0)
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def train_batches(mnist):
    from secateurs.examples import batches
    x, y, _, _ = mnist
    return batches(x, y, batch_size=128, n=31, seed=1)  # one pass over the 4,000 training signals


def _acc(model, mnist):
    from secateurs.examples import accuracy
    return accuracy(model, mnist[2], mnist[3])


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- recovery

def test_recover_after_channel_pruning_raises_accuracy(dense, mnist, train_batches):
    x = mnist[0]
    small = sc.prune(dense, x[:8], ratio=0.5)
    assert small.conv2.out_channels == 16
    before = _acc(small, mnist)
    recalibrated = _acc(sc.posttrain.recalibrate(small, x.split(128)), mnist)
    out = recover(small, train_batches, steps=60, lr=3e-3)
    assert out is small
    after = _acc(small, mnist)
    # measured: 0.09 right after pruning, 0.24 with BN statistics re-estimated, 0.84 after 60 steps
    assert after > before + 0.4 and after > recalibrated + 0.3, (before, recalibrated, after)


def test_recover_with_distillation_raises_accuracy_and_leaves_teacher(dense, mnist, train_batches):
    teacher = copy.deepcopy(dense).train()  # a teacher left in train mode must still be run (and left) as is
    teacher.bn1.eval()
    flags = {n: m.training for n, m in teacher.named_modules()}
    state = _state(teacher)
    small = sc.prune(dense, mnist[0][:8], ratio=0.5)
    before = _acc(small, mnist)
    recover(small, train_batches, steps=60, lr=3e-3, teacher=teacher, temperature=4.0, alpha=0.7)
    assert _acc(small, mnist) > before + 0.4
    assert _same(state, teacher.state_dict())  # weights and BatchNorm running statistics
    assert {n: m.training for n, m in teacher.named_modules()} == flags
    assert all(p.grad is None and p.requires_grad for p in teacher.parameters())


def test_distillation_with_alpha_0_is_plain_training(dense, mnist, train_batches):
    small = sc.prune(dense, mnist[0][:8], ratio=0.5)
    a, b = copy.deepcopy(small), copy.deepcopy(small)
    recover(a, train_batches, steps=5, lr=3e-3)
    recover(b, train_batches, steps=5, lr=3e-3, teacher=dense, alpha=0.0)
    assert _same(a.state_dict(), b.state_dict())


def test_pure_distillation_needs_no_labels(dense, mnist):
    x = mnist[0]
    unlabelled = [(xb, None) for xb in x[:512].split(128)]
    small = sc.prune(dense, x[:8], ratio=0.5)
    before = _acc(small, mnist)
    recover(small, unlabelled, steps=40, lr=3e-3, teacher=dense, alpha=1.0)
    assert _acc(small, mnist) > before + 0.3


def test_kd_loss_is_hinton_kl():
    torch.manual_seed(1)
    s, t, T = torch.randn(6, 10), torch.randn(6, 10), 3.0
    p_t = torch.softmax(t / T, -1)
    expect = T * T * (p_t * (p_t.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    assert torch.allclose(_kd_loss(s, t, T), expect, atol=1e-6)
    assert _kd_loss(t, t, T).abs() < 1e-6
    # (B, L, C) logits: averaged over every position, as if flattened to (B * L, C)
    s3, t3 = torch.randn(2, 3, 10), torch.randn(2, 3, 10)
    assert torch.allclose(_kd_loss(s3, t3, T), _kd_loss(s3.reshape(6, 10), t3.reshape(6, 10), T))


# --------------------------------------------------------------------------------------- masks

def _masked_entries(module, name="weight"):
    """The (weight as the forward sees it, mask) of a secateurs-parametrized or torch-pruned tensor."""
    if hasattr(module, "parametrizations") and name in module.parametrizations:
        return getattr(module, name), module.parametrizations[name][0].mask
    return getattr(module, name), getattr(module, name + "_mask")


def test_masked_weights_stay_exactly_zero(dense, mnist, train_batches):
    x = mnist[0]
    channel = sc.apply(dense, sc.plan(dense, x[:8], ratio=0.5), mode="mask")
    unstructured = sc.prune(dense, x[:8], ratio=0.8, granularity="unstructured")
    torch_pruned = copy.deepcopy(dense)
    for name in ("conv2", "conv3", "fc"):
        torch_prune.l1_unstructured(getattr(torch_pruned, name), "weight", amount=0.7)
    unstructured_before = _acc(unstructured, mnist)
    for model in (channel, unstructured, torch_pruned):
        before = {n: _masked_entries(getattr(model, n))[0].detach().clone() for n in ("conv2", "conv3", "fc")}
        for n, w0 in before.items():
            assert (w0 == 0).any(), n
        recover(model, train_batches, steps=30, lr=1e-2)
        for n, w0 in before.items():
            w, mask = _masked_entries(getattr(model, n))
            assert (w[mask == 0] == 0).all(), n
            assert not torch.equal(w[mask != 0], w0[mask != 0]), n  # the kept weights did train
    assert _acc(unstructured, mnist) > unstructured_before + 0.4  # measured: 0.09 -> 0.77


# -------------------------------------------------------------------------- determinism, state

def test_same_seed_same_weights_and_global_rng_untouched(dense, mnist):
    from torch.utils.data import DataLoader, TensorDataset
    x, y = mnist[0][:1024], mnist[1][:1024]
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)  # shuffles with the global RNG
    small = sc.prune(dense, x[:8], ratio=0.5)
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(123)
        expect = torch.rand(3)
        torch.manual_seed(123)
        runs.append(recover(copy.deepcopy(small), loader, steps=12, lr=3e-3, seed=seed).state_dict())
        assert torch.equal(torch.rand(3), expect)  # recover left the global RNG where it found it
    assert _same(runs[0], runs[1])
    assert not _same(runs[0], runs[2])


@pytest.mark.parametrize("flags", ["eval", "train", "mixed"])
def test_train_eval_flags_restored(flags):
    model = _Toy()
    model.train(flags != "eval")
    if flags == "mixed":
        model.norm.eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.training and m.norm.training))
    before = {n: m.training for n, m in model.named_modules()}
    recover(model, _toy_batches(), steps=3)
    assert seen == [True] * 3  # every module trains during recovery
    assert {n: m.training for n, m in model.named_modules()} == before


def test_flags_and_rng_restored_when_training_fails():
    model = _Toy().eval()
    state = torch.random.get_rng_state()

    def bad_loss(output, targets):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        recover(model, _toy_batches(), bad_loss, steps=3, seed=7)
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.random.get_rng_state(), state)


# ------------------------------------------------------------------- inputs, outputs, losses

class _Toy(nn.Module):
    """x -> Linear -> BatchNorm -> Linear: 4 classes."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, classes)

    def forward(self, x, scale=None):
        h = self.fc2(torch.relu(self.norm(self.fc1(x))))
        return h if scale is None else h * scale


def _toy_batches(n=4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


class _Output(OrderedDict):
    """Stands in for a Hugging Face ModelOutput: a dict whose entries are also attributes."""

    def __getattr__(self, name):
        return self[name]


class _Wrapped(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.inner = kind, _Toy()

    def forward(self, x, scale=None):
        logits = self.inner(x, scale)
        if self.kind == "tuple":
            return (logits, torch.zeros(()))
        return _Output(loss=torch.zeros(()), logits=logits)


@pytest.mark.parametrize("kind", ["tuple", "model_output"])
def test_logits_found_in_tuple_and_model_output(kind):
    plain, wrapped = _Toy(), _Wrapped(kind)
    wrapped.inner.load_state_dict(plain.state_dict())
    recover(plain, _toy_batches(), steps=4, lr=1e-2)
    recover(wrapped, _toy_batches(), steps=4, lr=1e-2)
    assert _same(plain.state_dict(), wrapped.inner.state_dict())


def test_tuple_and_dict_inputs_and_custom_loss():
    base = _toy_batches()
    plain, as_tuple, as_dict = _Toy(), _Toy(), _Toy()
    as_tuple.load_state_dict(plain.state_dict())
    as_dict.load_state_dict(plain.state_dict())
    recover(plain, [(x, y) for x, y in base], steps=4)
    recover(as_tuple, [((x, torch.tensor(1.0)), y) for x, y in base], steps=4)
    recover(as_dict, [({"x": x}, y) for x, y in base], steps=4)
    assert _same(plain.state_dict(), as_tuple.state_dict())
    assert _same(plain.state_dict(), as_dict.state_dict())

    calls = []

    def loss_fn(output, targets):
        calls.append((output.shape, targets.shape))
        return ((output - 1) ** 2).mean()

    model = _Toy()
    recover(model, base, loss_fn, steps=40, lr=1e-2)
    assert calls[0] == (torch.Size([16, 4]), torch.Size([16])) and len(calls) == 40
    model.eval()
    assert ((model(base[0][0]) - 1) ** 2).mean() < 0.1  # it minimised the custom loss


def test_sequence_logits_use_every_position():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(20, 8), nn.Linear(8, 5)

        def forward(self, ids):
            return self.head(self.emb(ids))  # (B, L, 5)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (4, 6), generator=g)
    tags = ids % 5
    tags[:, -1] = -100  # ignored positions
    model = Tagger()
    recover(model, [(ids, tags)], steps=100, lr=3e-2)
    assert (model(ids).argmax(-1)[:, :-1] == tags[:, :-1]).all()


def test_cycles_a_list_and_shows_progress(capsys):
    seen = []
    model = _Toy()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].data_ptr()))
    data = _toy_batches(3)
    recover(model, data, steps=7, quiet=False)
    assert seen == [b[0].data_ptr() for b in (data * 3)[:7]]
    assert "recover" in capsys.readouterr().err


def test_lr_schedule_warmup_then_cosine():
    steps, warmup = 1000, min(100, 1000 // 10)
    f = [_lr_factor(s, steps, warmup) for s in range(steps)]
    assert f[0] == pytest.approx(0.01) and f[warmup - 1] == pytest.approx(1.0) and f[warmup] == 1.0
    assert all(a < b for a, b in itertools.pairwise(f[:warmup]))
    assert all(a >= b for a, b in itertools.pairwise(f[warmup:]))
    assert 0 < f[-1] < 1e-4
    assert f[warmup + (steps - warmup) // 2] == pytest.approx(0.5)
    assert _lr_factor(0, 5, 5 // 10) == 1.0  # fewer than 10 steps: no warm-up, full lr at once


# ---------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("name,value", [
    ("steps", 0), ("steps", -3), ("steps", 2.5), ("steps", True), ("steps", None),
    ("lr", 0), ("lr", -1e-3), ("lr", math.nan), ("lr", "1e-3"),
    ("alpha", -0.1), ("alpha", 1.5), ("temperature", 0), ("temperature", -2.0),
    ("weight_decay", -0.01), ("seed", -1),
])
def test_bad_arguments_name_the_parameter(name, value):
    kwargs = {"steps": 2, name: value}
    with pytest.raises(ValueError, match=name):
        recover(_Toy(), _toy_batches(), teacher=_Toy(), **kwargs)


def test_bad_inputs_are_explained():
    with pytest.raises(TypeError, match="model"):
        recover("not a model", _toy_batches(), steps=2)
    with pytest.raises(TypeError, match="teacher"):
        recover(_Toy(), _toy_batches(), steps=2, teacher=lambda x: x)
    with pytest.raises(ValueError, match="teacher"):
        model = _Toy()
        recover(model, _toy_batches(), steps=2, teacher=model)
    with pytest.raises(TypeError, match="batches"):
        recover(_Toy(), torch.randn(4, 8), steps=2)
    with pytest.raises(TypeError, match="loss_fn"):
        recover(_Toy(), _toy_batches(), "xent", steps=2)
    with pytest.raises(ValueError, match="teacher and student logits differ in shape"):
        recover(_Toy(), _toy_batches(), steps=2, teacher=_Toy(classes=5))
    with pytest.raises(ValueError, match=r"ran out after 3 batches but steps=5"):
        recover(_Toy(), iter(_toy_batches(3)), steps=5)
    recover(_Toy(), iter(_toy_batches(3)), steps=3)  # exactly enough is fine
    with pytest.raises(ValueError, match="empty"):
        recover(_Toy(), [], steps=2)
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pair; batch 0"):
        recover(_Toy(), [torch.randn(4, 8)], steps=2)
    with pytest.raises(ValueError, match="scalar"):
        recover(_Toy(), _toy_batches(), lambda out, y: out, steps=2)
    with pytest.raises(ValueError, match="requires_grad"):
        recover(_Toy().requires_grad_(False), _toy_batches(), steps=2)
