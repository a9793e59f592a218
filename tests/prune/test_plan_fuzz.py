"""Properties of plans mutated at random (sizes, indices, layouts, syncs, masks, shapes, fields, types).

Edited plans either fail with a clear ValueError before the model changes at all, or yield a model
that runs with the output shapes the original plan promised. Plans crafted by hand (the structure
digest recomputed after the edit) either fail the same way or only slice tensors and set size
attributes. FUZZ_EXAMPLES=2000 searches harder than the default CI run."""
import base64
import contextlib
import copy
import functools
import json
import os

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import secateurs as sc
from secateurs.graph.graph import SYNC_ATTRS
from secateurs.prune.validate import MAX_MESSAGE, structure_digest, tensors_of
from tests.helpers import outputs, same_snapshot, snapshot
from tests.prune.nets import ATTN_X, CNN_X, SEQ_X, ResidualCNN, SelfAttention, TinyBlock

SOURCES = [(ResidualCNN, CNN_X, {}), (TinyBlock, SEQ_X, {}), (TinyBlock, SEQ_X, {"granularity": "head"}),
           (SelfAttention, ATTN_X, {"granularity": "head"}), (ResidualCNN, CNN_X, {"granularity": "unstructured"}),
           (TinyBlock, SEQ_X, {"granularity": "2:4"})]
ATTRS = ["stride", "forward", "padding", "dilation", "training", "groups", "num_groups", "num_heads", "heads",
         "normalized_shape", "in_channels", "embed_dim", "hidden_dim"]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 12), st.floats(allow_nan=False),
                 st.text(max_size=4), st.lists(st.integers(-2, 40), max_size=3), st.just({"a": 1}))
SMALL = st.integers(-2, 70)


@functools.cache
def source(i: int):
    """(model, inputs, plan JSON, output shapes in eval and train) for SOURCES[i], made once."""
    make, x, kw = SOURCES[i]
    torch.manual_seed(i)
    model = make().eval()
    text = sc.plan(model, x, ratio=0.5, **kw).to_json()
    shapes = {train: [t.shape for t in outputs(copy.deepcopy(model), x, train)] for train in (False, True)}
    return model, x, text, shapes


def layouts(depth: int = 2):
    leaf = st.one_of(st.tuples(st.just("g"), SMALL, SMALL).map(list), st.tuples(st.just("n"), SMALL).map(list), JUNK)
    if depth == 0:
        return leaf
    node = st.tuples(st.sampled_from(["prod", "cat", "x"]), st.lists(layouts(depth - 1), max_size=3)).map(list)
    return st.one_of(leaf, node)


def _pick(draw, seq):
    return draw(st.sampled_from(sorted(seq))) if seq else None


def m_removals(d, draw):  # often valid: a new subset of a pruned group's indices
    g = _pick(draw, [g["id"] for g in d["groups"] if g["remove"]])
    if g is not None:
        size = d["groups"][g]["size"]
        d["groups"][g]["remove"] = draw(st.lists(st.integers(0, size - 1), unique=True, max_size=size - 1))


def m_index(d, draw):
    g = _pick(draw, range(len(d["groups"])))
    if g is not None:
        d["groups"][g]["remove"].append(draw(st.one_of(SMALL, JUNK)))


def m_group_field(d, draw):
    g = _pick(draw, range(len(d["groups"])))
    if g is not None:
        key = draw(st.sampled_from(["id", "size", "kind", "remove", "producers", "extra"]))
        if draw(st.booleans()):
            d["groups"][g].pop(key, None)
        else:
            d["groups"][g][key] = draw(st.one_of(SMALL, JUNK))


def m_layout(d, draw):
    name = _pick(draw, d["layouts"])
    if name is not None:
        dims = d["layouts"][name]
        key = draw(st.one_of(st.sampled_from(sorted(dims)), st.sampled_from(["0", "1", "2", "9", "-1", "x"])))
        if draw(st.booleans()):
            dims[key] = draw(layouts())
        else:
            dims.pop(key, None)


def m_shape(d, draw):
    name = _pick(draw, d["shapes"])
    if name is not None:
        shape = d["shapes"][name]
        if shape and draw(st.booleans()):
            shape[draw(st.integers(0, len(shape) - 1))] += draw(st.sampled_from([-1, 1, 10 ** 9]))
        else:
            d["shapes"][name] = draw(JUNK)


def m_sync(d, draw):
    choice = draw(st.sampled_from(["attr", "module", "layouts", "drop", "add"]))
    i = _pick(draw, range(len(d["syncs"])))
    if choice == "add" or i is None:
        lay = next((t for dims in d["layouts"].values() for t in dims.values()), ["g", 0, 4])
        d["syncs"].append({"module": draw(st.sampled_from(["", "stem.0", "attn", "norm1", "grouped", "qkv", "x"])),
                           "attr": draw(st.sampled_from(ATTRS)), "layouts": [lay]})
    elif choice == "drop":
        d["syncs"].pop(i)
    elif choice == "layouts":
        d["syncs"][i]["layouts"] = draw(st.lists(layouts(1), max_size=2))
    else:
        d["syncs"][i][choice] = draw(st.one_of(st.sampled_from(ATTRS), JUNK))


def m_mask(d, draw):
    name = _pick(draw, d["masks"])
    if name is None:
        return
    entry = d["masks"][name]
    choice = draw(st.sampled_from(["bits", "length", "zeros", "shape", "junk"]))
    n = 1
    for s in entry["shape"]:
        n *= s
    if choice == "bits":  # valid: other weights masked
        entry["bits"] = base64.b64encode(draw(st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8))).decode()
    elif choice == "length":
        entry["bits"] = entry["bits"][:draw(st.integers(0, len(entry["bits"])))]
    elif choice == "zeros":
        entry["bits"] = base64.b64encode(bytes((n + 7) // 8)).decode()
    elif choice == "shape":
        entry["shape"] = draw(st.one_of(st.lists(st.integers(0, 40), max_size=4), JUNK))
    else:
        d["masks"][name] = draw(JUNK)


def m_top(d, draw):
    key = draw(st.sampled_from(sorted(d) + ["extra"]))
    if draw(st.booleans()):
        d.pop(key, None)
    else:
        d[key] = draw(JUNK)


def m_signature(d, draw):
    key = draw(st.sampled_from(["fingerprint", "pruned", "structure", "tensors", "extra"]))
    d["signature"][key] = draw(st.one_of(JUNK, st.lists(st.integers(0, 4), max_size=3)))


MUTATIONS = [m_removals, m_index, m_group_field, m_layout, m_shape, m_sync, m_mask, m_top, m_signature]


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_plan_fails_clearly_or_runs(data):
    torch.set_num_threads(1)
    i = data.draw(st.integers(0, len(SOURCES) - 1), label="source")
    base, x, text, shapes = source(i)
    plan_data = json.loads(text)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        # an earlier mutation may already have broken what this one edits
        with contextlib.suppress(AttributeError, KeyError, IndexError, TypeError, ValueError):
            data.draw(st.sampled_from(MUTATIONS), label="mutation")(plan_data, data.draw)
    model = copy.deepcopy(base)
    before = snapshot(model)
    inplace = data.draw(st.booleans(), label="inplace")
    try:
        plan = sc.Plan.from_json(json.dumps(plan_data))
        mode = "mask" if plan.masks else data.draw(st.sampled_from(["remove", "mask"]), label="mode")
        out = sc.apply(model, plan, mode=mode, inplace=inplace)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert message.startswith(("invalid plan", "plan ")), message
        assert len(message) <= MAX_MESSAGE
        assert same_snapshot(before, snapshot(model))
        event("rejected: " + message[:45])
        return
    event("applied")
    for train, expected in shapes.items():
        assert [t.shape for t in outputs(out, x, train)] == expected
    if not inplace:
        assert same_snapshot(before, snapshot(model))


# What surgery may change besides a plan's syncs: the sizes it recomputes from the sliced weights.
RECOMPUTED = {"in_channels", "out_channels", "in_features", "out_features", "num_features", "normalized_shape",
              "num_channels", "embedding_dim", "num_parameters", "nx", "nf", "embed_dim", "kdim", "vdim", "head_dim"}


def _reseal(plan_data: dict) -> None:
    """Recompute the structure digest, as someone crafting a plan by hand could."""
    try:
        p = sc.Plan(**plan_data)
        p.signature["structure"] = structure_digest(p, p.signature["pruned"])
        plan_data["signature"] = p.signature
    except Exception:  # noqa: BLE001 - a plan too broken to reseal stays as it is
        pass


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_crafted_plan_only_slices_tensors_and_sets_size_attributes(data):
    """A plan whose digest was recomputed after editing may make a model that computes nonsense, but it
    can only slice the tensors it names and set allow-listed size attributes, or fail clearly first."""
    torch.set_num_threads(1)
    base, _, text, _ = source(data.draw(st.integers(0, len(SOURCES) - 1), label="source"))
    plan_data = json.loads(text)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        with contextlib.suppress(AttributeError, KeyError, IndexError, TypeError, ValueError):
            data.draw(st.sampled_from(MUTATIONS[:6]), label="mutation")(plan_data, data.draw)
    _reseal(plan_data)
    model = copy.deepcopy(base)
    before = snapshot(model)
    try:
        plan = sc.Plan.from_json(json.dumps(plan_data))
        out = sc.apply(model, plan, mode="mask" if plan.masks else "remove")
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith(("invalid plan", "plan ")) and len(str(exc)) <= MAX_MESSAGE, str(exc)
        assert same_snapshot(before, snapshot(model))
        return
    event("applied")
    assert same_snapshot(before, snapshot(model))
    old, new = tensors_of(model), tensors_of(out)
    assert old.keys() == new.keys()
    assert all(o.dim() == n.dim() and all(a <= b for a, b in zip(n.shape, o.shape)) for o, n in
               ((old[k], new[k]) for k in old))
    mods = dict(out.named_modules())
    for name, m in model.named_modules():
        after = mods[name]
        assert type(after) is type(m) or isinstance(after, type(m)), (name, type(after))
        changed = {k for k, v in vars(m).items() if not k.startswith("_") and vars(after).get(k) != v}
        assert changed <= SYNC_ATTRS | RECOMPUTED, (name, changed)
        assert all(isinstance(vars(after)[k], (int, tuple)) for k in changed)
