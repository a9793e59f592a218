"""Plan.validate: a plan is untrusted data, checked against the model before apply changes anything."""
import copy
import json
import re

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet34

import secateurs as sc
from secateurs.prune import surgery
from secateurs.prune import validate as V
from secateurs.prune.validate import MAX_MESSAGE, seal
from tests.helpers import outputs, same_snapshot, snapshot
from tests.prune.nets import ATTN_X, CNN_X, SEQ_X, ResidualCNN, SelfAttention, TinyBlock

X = torch.randn(1, 3, 32, 32)


@pytest.fixture(scope="module")
def cnn_plan():
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    return model, sc.plan(model, CNN_X, ratio=0.5)


def _edited(plan: sc.Plan, edit) -> sc.Plan:
    """A deep copy of ``plan`` changed by ``edit(copy)`` (as code would), keeping the recorded signature."""
    p = copy.deepcopy(plan)
    edit(p)
    return p


def _json_edited(plan: sc.Plan, edit) -> str:
    data = json.loads(plan.to_json())
    edit(data)
    return json.dumps(data)


def _rejected(model: nn.Module, plan: sc.Plan, match: str, inplace: bool = True) -> str:
    """apply raises a short ValueError matching ``match`` and leaves the model exactly as it was."""
    before = snapshot(model)
    with pytest.raises(ValueError, match=match) as info:
        sc.apply(model, plan, mode="mask" if plan.masks else "remove", inplace=inplace)
    assert same_snapshot(before, snapshot(model))
    assert len(str(info.value)) <= MAX_MESSAGE
    return str(info.value)


def test_plan_for_resnet18_rejected_on_resnet34():
    small = resnet18().eval()
    p = sc.plan(small, X, ratio=0.5)
    # every tensor the plan names exists in resnet34 with the same shape: only the signature tells them apart
    big = resnet34().eval()
    have = dict(big.named_parameters()) | dict(big.named_buffers())
    assert all(list(have[n].shape) == s for n, s in p.shapes.items())
    msg = _rejected(big, p, "plan does not fit this model: it was made for a ResNet with 68 modules")
    assert "this model is a ResNet with 116 modules" in msg


@pytest.mark.parametrize("attr,value", [("stride", None), ("forward", None), ("padding", None)])
def test_sync_outside_the_allow_list_rejected(cnn_plan, attr, value):
    model, p = cnn_plan
    bad = _edited(p, lambda q: q.syncs[0].update(attr=attr))
    _rejected(model, bad, f"sync #0 sets '{attr}' of module 'grouped'; a plan may only set the size attributes")
    with pytest.raises(ValueError, match=f"sets '{attr}'"):
        sc.Plan.from_json(bad.to_json())


def test_sync_of_allowed_name_must_hold_that_size(cnn_plan):
    model, p = cnn_plan
    moved = _edited(p, lambda q: q.syncs[0].update(module="stem.0"))  # Conv2d groups=1, not 4
    _rejected(model, moved, r"sync stem.0.groups: Conv2d holds 1 there, the plan's layouts span \[4\]")
    missing = _edited(p, lambda q: q.syncs[0].update(module="nowhere"))
    _rejected(model, missing, "names module 'nowhere', which the model does not have")
    other = _edited(p, lambda q: q.syncs[1].update(attr="num_channels"))  # GroupNorm.num_channels is 32
    _rejected(model, other, r"sync norm.num_channels: GroupNorm holds 32 there")


@pytest.mark.parametrize("index", [1.5, True, "3", None, -1, 10 ** 6])
def test_bad_indices_rejected(cnn_plan, index):
    model, p = cnn_plan
    bad = _edited(p, lambda q: q.groups[2]["remove"].append(index))
    _rejected(model, bad, r"group 2 removes index .*; indices are integers in \[0, 24\)")


def test_duplicate_and_every_index_rejected_also_in_code(cnn_plan):
    model, p = cnn_plan
    twice = _edited(p, lambda q: q.groups[2].update(remove=[1, 1]))
    _rejected(model, twice, "group 2 lists an index twice")
    # a plan made in code, no signature: still rejected before any (0, 3, 3, 3) weight exists
    made = sc.Plan(p.model_class, copy.deepcopy(p.groups), p.layouts, p.shapes, p.syncs)
    made.groups[2]["remove"] = list(range(24))
    _rejected(model, made, "group 2 removes all 24 of its elements; a group keeps at least one")


def test_million_bad_indices_give_a_short_message(cnn_plan):
    model, p = cnn_plan
    bad = _edited(p, lambda q: q.groups[2].update(remove=[0.5] * 10 ** 6))
    _rejected(model, bad, "group 2 lists 1000000 indices to remove but has only 24 elements")
    bad = _edited(p, lambda q: q.groups[2].update(remove=list(range(23)) + ["x" * 10 ** 6]))
    assert len(_rejected(model, bad, r"group 2 removes index 'x+\.\.\.x+'")) < 200


def test_layout_of_fixed_indices_rejected(cnn_plan):
    model, p = cnn_plan
    bad = _edited(p, lambda q: q.layouts["body.1.weight"].update({"0": ["n", 24]}))
    _rejected(model, bad, r"layout of body.1.weight dim 0 names no group: \['n', 24\]")
    for tree, match in ((["n", 8], "spans 8 indices"),
                        (["cat", [["g", 2, 24], ["n", 8]]], "spans 32 indices, the tensor's dimension has 24"),
                        (["g", 2, 8], "gives group 2 size 8, the group has size 24"),
                        (["g", 99, 24], "names group 99, which the plan does not have"),
                        (["g", 2, 24, 1], "malformed"), (["prod", []], "malformed"), (["g", 2.0, 24], "malformed")):
        bad = _edited(p, lambda q, tree=tree: q.layouts["body.1.weight"].update({"0": tree}))
        _rejected(model, bad, match)
    deep = ["g", 2, 24]
    for _ in range(50):
        deep = ["cat", [deep]]
    _rejected(model, _edited(p, lambda q: q.layouts["body.1.weight"].update({"0": deep})), "nested deeper")
    _rejected(model, _edited(p, lambda q: q.layouts["body.1.weight"].update({"7": ["g", 2, 24]})),
              "name dimension '7'; the tensor has shape")
    swapped = _edited(p, lambda q: q.layouts["body.1.weight"].update({"0": ["g", 3, 8]}))  # consistent-looking, wrong
    _rejected(model, swapped, "spans 8 indices")


def test_huge_sizes_rejected_before_any_allocation(cnn_plan, monkeypatch):
    model, p = cnn_plan
    monkeypatch.setattr(surgery, "_kept_per_group", lambda plan: pytest.fail("allocated before validating"))
    _rejected(model, _edited(p, lambda q: q.groups[2].update(size=1e10)),
              "group 2 has size 10000000000.0, expected a positive integer")
    _rejected(model, _edited(p, lambda q: q.groups[2].update(size=10 ** 10)), "gives group 2 size 24")
    with pytest.raises(ValueError, match="has size 10000000000.0"):
        sc.Plan.from_json(_json_edited(p, lambda d: d["groups"][2].update(size=1e10)))


def test_group_size_must_match_every_tensor(cnn_plan):
    model, p = cnn_plan

    def edit(q):
        q.groups[2]["size"] = 25
        for dims in q.layouts.values():
            for d, tree in dims.items():
                if tree == ["g", 2, 24]:
                    dims[d] = ["g", 2, 25]
        q.shapes = {n: [25 if s == 24 else s for s in shape] for n, shape in q.shapes.items()}
    q = _edited(p, edit)
    q.signature = None  # a consistent plan for a wider model, made in code
    _rejected(model, q, r"body.0.weight has shape \[24, 16, 3, 3\], the plan expects \[25, 16, 3, 3\]")


def test_removals_need_their_layouts_and_must_not_be_skipped(cnn_plan):
    model, p = cnn_plan
    kept = sc.plan(model, CNN_X, ratio=0.5, ratios={"body.0": 0.0})  # group 2 not pruned: no layouts for it
    assert 2 not in kept.signature["pruned"] and "body.1.weight" not in kept.layouts
    _rejected(model, _edited(kept, lambda q: q.groups[2].update(remove=[0])),
              "group 2 removes elements, but no tensor layout in the plan names it")
    skipped = _edited(p, lambda q: q.skipped.append({"id": 2, "reason": "breaks the forward"}))
    _rejected(model, skipped, "group 2 removes elements, but the plan lists it as skipped")


def test_structure_is_sealed_but_removals_are_editable(cnn_plan):
    model, p = cnn_plan
    swapped = _edited(p, lambda q: q.layouts["grouped.weight"].update({"1": ["g", 0, 4]}))  # well formed, wrong
    _rejected(model, swapped, "structure .* differs from the one recorded when it was made")
    g = next(g for g in p.groups if g["remove"])
    edited = _edited(p, lambda q: q.groups[g["id"]].update(remove=[0, 1, 2]))  # legitimately edited by a person
    small = sc.apply(model, sc.Plan.from_json(edited.to_json()))
    assert outputs(small, CNN_X)[0].shape == (2, 10)
    pruned = sorted(g["id"] for g in p.groups if g["remove"])
    k, rest = pruned[-1], pruned[:-1]
    fewer = _edited(p, lambda q: q.groups[k].update(remove=[]))
    seal(fewer, {key: p.signature[key] for key in ("fingerprint", "modules", "tensors", "elements")})
    added = _edited(fewer, lambda q: q.groups[k].update(remove=[0]))
    _rejected(model, added,
              re.escape(f"groups [{k}] remove elements, but the plan was made to prune only groups {rest}"))


def test_signature_is_the_digest_of_sorted_names_types_and_shapes():
    """The fingerprint is pinned: the hash of the sorted [name, type] and [name, shape] lists (plans saved by
    earlier versions carry it)."""
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    mods = sorted([n, type(m).__name__] for n, m in model.named_modules())
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    shapes = sorted([n, list(t.shape)] for n, t in tensors.items())
    sig = V.model_signature(model)
    assert sig["fingerprint"] == V._digest([mods, shapes])
    assert (sig["modules"], sig["tensors"], sig["elements"]) == (len(mods), len(shapes),
                                                                 sum(t.numel() for t in tensors.values()))


def test_masks_checked_against_their_tensor():
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    p = sc.plan(model, CNN_X, ratio=0.5, granularity="unstructured")
    name = "stem.0.weight"
    _rejected(model, _edited(p, lambda q: q.masks[name].update(shape=[1])), r"mask of stem.0.weight has shape \[1\]")
    _rejected(model, _edited(p, lambda q: q.masks[name].update(bits="AAAA")), "holds 24 bits, its shape .* needs 432")
    _rejected(model, _edited(p, lambda q: q.masks[name].update(bits="!!")), "not base64")
    zeros = __import__("base64").b64encode(bytes(54)).decode()
    _rejected(model, _edited(p, lambda q: q.masks[name].update(bits=zeros)), "removes every element")
    buffer = _edited(p, lambda q: (q.masks.update({"stem.1.running_mean": q.masks.pop(name) | {"shape": [16]}}),
                                   q.shapes.update({"stem.1.running_mean": [16]})))
    buffer.masks["stem.1.running_mean"]["bits"] = "//8="
    buffer.signature = None
    _rejected(model, buffer, "masks stem.1.running_mean, which is not a floating-point parameter")


def test_plans_the_planner_makes_all_validate():
    torch.manual_seed(0)
    for make, x, kw in ((ResidualCNN, CNN_X, {}), (TinyBlock, SEQ_X, {}), (TinyBlock, SEQ_X, {"granularity": "head"}),
                        (SelfAttention, ATTN_X, {"granularity": "head"}), (TinyBlock, SEQ_X, {"granularity": "2:4"})):
        model = make().eval()
        p = sc.plan(model, x, ratio=0.5, **kw)
        q = sc.Plan.from_json(p.to_json())
        q.validate(model)
        assert q.signature["structure"] and q.version == 2
        masked = sc.apply(model, q, mode="mask")
        sc.Plan.from_json(p.to_json()).validate(sc.finalize(masked))  # a masked model still has the architecture


def test_version_1_plan_without_signature_still_applies(cnn_plan):
    model, p = cnn_plan
    data = json.loads(p.to_json())
    del data["signature"]
    data["version"] = 1
    old = sc.Plan.from_json(json.dumps(data))
    assert old.signature is None and '"version": 1' in old.to_json()
    torch.testing.assert_close(outputs(sc.apply(model, old), CNN_X)[0], outputs(sc.apply(model, p), CNN_X)[0])
    with pytest.raises(ValueError, match="plan version 2 must carry a model signature"):
        sc.Plan.from_json(json.dumps(dict(data, version=2)))
    with pytest.raises(ValueError, match="got version True"):
        sc.Plan.from_json(json.dumps(dict(data, version=True)))
    with pytest.raises(ValueError, match=r"unknown fields \['extra'\]"):
        sc.Plan.from_json(json.dumps(dict(data, extra=1)))


@pytest.mark.parametrize("mode", ["remove", "mask"])
def test_inplace_apply_is_all_or_nothing(cnn_plan, monkeypatch, mode):
    model, p = cnn_plan
    model = copy.deepcopy(model)
    before = snapshot(model)
    calls = []

    def fail_late(mod):  # the last step of surgery, after tensors and syncs were swapped in
        calls.append(mod)
        if len(calls) == 6:
            raise RuntimeError("injected failure")
        real(mod)

    real = surgery._sync_metadata
    monkeypatch.setattr(surgery, "_sync_metadata" if mode == "remove" else "_element_masks",
                        fail_late if mode == "remove" else lambda *a: (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError, match="injected"):
        sc.apply(model, p, mode=mode, inplace=True)
    assert same_snapshot(before, snapshot(model))
    monkeypatch.undo()
    small = sc.apply(model, p, mode=mode, inplace=True)
    assert small is model and outputs(model, CNN_X)[0].shape == (2, 10)


def test_inplace_apply_on_masked_model_rolls_back_finalize(monkeypatch):
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    p = sc.plan(model, CNN_X, ratio=0.5, granularity="unstructured")
    masked = sc.apply(model, p, mode="mask")
    before = snapshot(masked)
    monkeypatch.setattr(surgery, "_element_masks", lambda *a: (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError):
        sc.apply(masked, p, mode="mask", inplace=True)
    assert same_snapshot(before, snapshot(masked))
    monkeypatch.undo()
    assert torch.equal(outputs(masked, CNN_X)[0], outputs(sc.apply(model, p, mode="mask"), CNN_X)[0])


def test_model_without_weights_under_element_granularity():
    model = nn.Sequential(nn.ReLU(), nn.Flatten())
    for scope in ("local", "global"):
        with pytest.raises(ValueError, match="found no weights to mask in Sequential"):
            sc.plan(model, torch.randn(2, 3), ratio=0.5, granularity="unstructured", scope=scope)


def test_criterion_must_be_a_string():
    with pytest.raises(TypeError, match=r"criterion must be a string, one of \[.*'l2'.*\], got list \['l2'\]"):
        sc.plan(ResidualCNN(), CNN_X, criterion=["l2"])


@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
def test_element_plans_run_the_model_on_the_example_inputs(granularity):
    model = ResidualCNN().train()
    with pytest.raises(ValueError, match="forward of model failed on example_inputs: RuntimeError"):
        sc.plan(model, torch.randn(2, 5, 12, 12), ratio=0.5, granularity=granularity)
    assert model.training


def test_element_plan_forward_keeps_each_module_mode():
    model = ResidualCNN().train()
    model.stem[1].eval()  # a frozen BatchNorm stays frozen
    sc.plan(model, CNN_X, ratio=0.5, granularity="unstructured")
    assert model.training and not model.stem[1].training and model.body[1].training
