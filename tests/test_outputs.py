"""outputs=[...]: only the wanted outputs keep their shape; the others may shrink with their channels."""
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs._outputs import check_outputs, select_outputs
from secateurs.search.explore import fidelity


class WithHidden(nn.Module):
    """Returns its hidden states next to the logits, as Hugging Face encoder-decoders do."""

    def __init__(self, as_tuple: bool = False):
        super().__init__()
        self.as_tuple = as_tuple
        self.embed = nn.Linear(6, 32)
        self.mlp = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 32))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.mlp(h)
        logits = self.head(h)
        return (logits, h) if self.as_tuple else {"logits": logits, "hidden": h}


def _stream(graph):
    return [g for g in graph.groups if any(t == "embed.weight" and d == 0 for t, d, _ in g.tensors)]


@pytest.mark.parametrize("as_tuple,wanted", [(False, ["logits"]), (True, [0])])
def test_hidden_width_prunes_only_when_hidden_states_are_unwanted(as_tuple, wanted):
    model, x = WithHidden(as_tuple).eval(), torch.randn(1, 7, 6)
    assert not _stream(sc.trace(model, x))  # the returned hidden states pin the residual width
    g = sc.trace(model, x, outputs=wanted)
    assert len(_stream(g)) == 1 and g.outputs == wanted and g.output_shapes == {"eval": [[1, 7, 5]]}
    p = sc.plan(model, x, 0.5, outputs=wanted)
    assert p.settings["outputs"] == wanted and not [s for s in p.skipped if "id" in s]
    small = sc.apply(model, p)
    with torch.no_grad():
        ref, out = model(x), small(x)
    key_l, key_h = (0, 1) if as_tuple else ("logits", "hidden")
    assert out[key_l].shape == ref[key_l].shape
    assert out[key_h].shape == (1, 7, 16)  # the unwanted output shrank with the stream
    masked = sc.apply(model, p, mode="mask")
    with torch.no_grad():
        torch.testing.assert_close(masked(x)[key_l], out[key_l], atol=1e-5, rtol=1e-4)


def test_ratio_zero_keeps_wanted_outputs_equal():
    model, x = WithHidden().eval(), torch.randn(1, 3, 6)
    small = sc.prune(model, x, 0.0, outputs=["logits"])
    with torch.no_grad():
        assert torch.equal(small(x)["logits"], model(x)["logits"])


def test_bad_outputs_name_the_available_ones():
    model, x = WithHidden().eval(), torch.randn(1, 3, 6)
    with pytest.raises(ValueError, match=r"'logit'.*outputs \['logits', 'hidden'\]"):
        sc.trace(model, x, outputs=["logit"])
    with pytest.raises(ValueError, match="single Tensor"):
        sc.plan(nn.Linear(6, 4), torch.randn(1, 6), 0.3, outputs=[0])
    with pytest.raises(ValueError, match=r"outputs \[0, 1\]"):
        sc.trace(WithHidden(as_tuple=True), x, outputs=[2])
    with pytest.raises(TypeError, match="list of output names"):
        sc.plan(model, x, 0.3, outputs="logits")
    with pytest.raises(TypeError, match="entries"):
        check_outputs([1.5])
    with pytest.raises(ValueError, match="twice"):
        check_outputs(["logits", "logits"])
    with pytest.raises(ValueError, match="at least one"):
        check_outputs([])


def test_plan_refuses_a_graph_traced_for_other_outputs():
    model, x = WithHidden().eval(), torch.randn(1, 3, 6)
    g = sc.trace(model, x)
    with pytest.raises(ValueError, match="differs from the outputs the graph was traced with"):
        sc.plan(model, x, 0.3, graph=g, outputs=["logits"])
    # a graph traced with outputs carries them: verification compares the wanted outputs only
    g = sc.trace(model, x, outputs=["logits"])
    p = sc.plan(model, x, 0.5, graph=g)
    assert p.settings["outputs"] == ["logits"] and any(gr["remove"] for gr in p.groups)


def test_select_outputs_flattens_nested_values_in_order():
    out = {"a": torch.zeros(1), "b": (torch.ones(2), {"c": torch.ones(3)}), "none": None}
    assert [t.numel() for t in select_outputs(out, ["b", "a"])] == [2, 3, 1]
    assert [t.numel() for t in select_outputs(out, None)] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        select_outputs(out, ["none"])  # an output without tensors is not offered


def test_fidelity_compares_the_wanted_outputs_only():
    model, x = WithHidden().eval(), torch.randn(1, 3, 6)
    small = sc.prune(model, x, 0.5, outputs=["logits"])
    score = fidelity(model, x, ["logits"])(small)
    assert -1.0 <= score <= 1.0 and fidelity(model, x, ["logits"])(model) == pytest.approx(1.0)
