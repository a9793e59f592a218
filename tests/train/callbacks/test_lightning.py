import pytest
import torch
import torch.nn.functional as F

import secateurs as sc
from secateurs.examples.models import mnist1d_cnn

pl = pytest.importorskip("lightning.pytorch")
from secateurs.train.callbacks.lightning import PrunerCallback  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Module(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loader():
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 40, generator=g), torch.randint(0, 10, (64,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=8)


def trainer(steps, tmp_path, cb):
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb], num_sanity_val_steps=0)


def test_lightning_callback_prunes_during_fit_and_resumes_from_a_checkpoint(tmp_path):
    sched = sc.Polynomial(0.0, 0.7, begin_step=2, end_step=10, frequency=2)
    net = mnist1d_cnn(channels=8)
    pr = sc.Pruner(net, torch.randn(2, 1, 40), sched)
    t = trainer(6, tmp_path, PrunerCallback(pr))
    t.fit(Module(net), loader())
    assert pr.step_count == 6 and pr.sparsity == pytest.approx(sched.sparsity_at(6), abs=0.01)
    ckpt = tmp_path / "half.ckpt"
    t.save_checkpoint(ckpt)

    net2 = mnist1d_cnn(channels=8)
    pr2 = sc.Pruner(net2, torch.randn(2, 1, 40), sched)
    trainer(12, tmp_path, PrunerCallback(pr2)).fit(Module(net2), loader(), ckpt_path=ckpt)
    assert pr2.step_count == 12 and pr2.sparsity == pytest.approx(0.7, abs=0.01)
    assert all(bool((pr.masks[n] | ~pr2.masks[n]).all()) for n in pr.masks)  # grown from it


def test_bad_input():
    with pytest.raises(TypeError, match="Pruner"):
        PrunerCallback("pruner")
    with pytest.raises(ValueError, match="every"):
        PrunerCallback(sc.Pruner(mnist1d_cnn(channels=4), torch.randn(2, 1, 40), sc.OneShot(1, 0.5)), every="batch")
