"""deepcopy_module makes what copy.deepcopy makes: classes, attributes, sharing, hooks, memo use."""
import copy

import torch
from torch import nn

from secateurs.prune.clone import deepcopy_module


class Custom(nn.Module):
    """Copies itself its own way: deepcopy_module must hand it to copy.deepcopy."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def __deepcopy__(self, memo):
        new = Custom()
        new.lin = copy.deepcopy(self.lin, memo)
        new.marked = True
        return new


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.again = self.shared  # one module under two names
        self.tied = nn.Linear(4, 4)
        self.tied.weight = self.shared.weight  # one parameter in two modules
        self.conv = nn.Conv2d(2, 3, (1, 2), padding=(0, 1))
        self.custom = Custom()
        self.register_buffer("scratch", torch.ones(2), persistent=False)
        self.sizes = [4, (2, 3)]
        self.table = {"a": torch.arange(3)}
        self.calls = []
        self.conv.register_forward_hook(lambda m, i, o: self.calls.append(1))


def _same(a: nn.Module, b: nn.Module) -> None:
    assert [(n, type(m)) for n, m in a.named_modules(remove_duplicate=False)] == \
        [(n, type(m)) for n, m in b.named_modules(remove_duplicate=False)]
    for (n, ma), mb in zip(a.named_modules(remove_duplicate=False), b.modules(remove_duplicate=False)):
        assert sorted(vars(ma)) == sorted(vars(mb)), n
    sa, sb = a.state_dict(keep_vars=True), b.state_dict(keep_vars=True)
    assert sa.keys() == sb.keys() and all(type(sa[k]) is type(sb[k]) and torch.equal(sa[k], sb[k]) for k in sa)


def test_same_as_deepcopy_with_sharing_kept_and_nothing_shared_with_the_original():
    net = Net()
    new = deepcopy_module(net, {})
    _same(copy.deepcopy(net), new)
    assert new.again is new.shared and new.tied.weight is new.shared.weight
    assert new.shared is not net.shared and new.shared.weight is not net.shared.weight
    assert new.shared.weight.data_ptr() != net.shared.weight.data_ptr()
    assert new.custom.marked and new.custom.lin is not net.custom.lin
    assert new.table["a"] is not net.table["a"] and new.sizes == net.sizes and new.sizes is not net.sizes
    assert new._non_persistent_buffers_set == {"scratch"} and new.scratch is not net.scratch
    assert new.conv.padding == (0, 1) and len(new.conv._forward_hooks) == 1


def test_memo_entries_are_used_as_they_are():
    net = Net()
    smaller = nn.Parameter(torch.zeros(2, 4))
    new = deepcopy_module(net, {id(net.shared.weight): smaller})
    assert new.shared.weight is smaller and new.tied.weight is smaller
    assert new.tied.bias is not net.tied.bias


def test_buffers_sharing_storage_stay_shared_as_deepcopy_keeps_them():
    net = nn.Module()
    base = torch.arange(10.0)
    net.register_buffer("whole", base)
    net.register_buffer("view", base[2:5])  # a view: same storage, offset 2
    net.register_buffer("alias", base.detach())  # another tensor over the same storage
    net.register_buffer("count", torch.tensor(3))
    for copied in (copy.deepcopy(net), deepcopy_module(net, {})):
        assert copied.whole.data_ptr() != net.whole.data_ptr() and torch.equal(copied.whole, net.whole)
        assert copied.view.untyped_storage().data_ptr() == copied.whole.untyped_storage().data_ptr()
        assert copied.alias.untyped_storage().data_ptr() == copied.whole.untyped_storage().data_ptr()
        assert copied.view.storage_offset() == 2 and copied.view.tolist() == [2.0, 3.0, 4.0]
        assert copied.count.item() == 3 and copied.count is not net.count
