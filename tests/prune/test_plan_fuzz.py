"""Property: a valid plan mutated at random (sizes, indices, layouts, syncs, masks, shapes, fields, types)
either fails with a clear ValueError before the model changes at all, or yields a model that runs with
the output shapes the original plan promised."""
import base64
import copy
import functools
import json
import os

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import secateurs as sc
from secateurs.prune.validate import MAX_MESSAGE
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


@functools.lru_cache(maxsize=None)
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


@settings(max_examples=int(os.environ.get('FUZZ_EXAMPLES', 80)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_plan_fails_clearly_or_runs(data):
    torch.set_num_threads(1)
    i = data.draw(st.integers(0, len(SOURCES) - 1), label="source")
    base, x, text, shapes = source(i)
    plan_data = json.loads(text)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        try:
            data.draw(st.sampled_from(MUTATIONS), label="mutation")(plan_data, data.draw)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            pass  # an earlier mutation already broke what this one edits
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
