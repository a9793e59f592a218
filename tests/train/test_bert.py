"""The Pruner on a tiny BERT: movement pruning during a fine-tune (Sanh et al. 2020), attention heads."""
import pytest
import torch

import secateurs as sc
from secateurs.train.optim_state import plain_parameters

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert(heads=2):
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg)


def task(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, 12), generator=g)
    return ids, (ids == 7).any(1).long() | (ids < 10).sum(1).gt(1).long()


def test_movement_scores_accumulate_over_training_and_differ_from_magnitude_as_the_paper_says():
    """Plain SGD, so each step moves w by -lr * g and S = -sum w_t g_t = sum w_t dw_t / lr measures, to first
    order, how far |w| grew during fine-tuning: the paper's "weights moving away from zero"."""
    model = tiny_bert()
    ids, labels = task(64, 0)
    steps = 30
    pr = sc.Pruner(model, {"input_ids": ids[:2]}, sc.OneShot(step=steps, sparsity=0.5), criterion="movement",
                   ignore=["bert.embeddings", "classifier"])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    params = plain_parameters(model)
    names = sorted(pr.targets)
    start = {n: params[n].detach().clone() for n in names}
    by_hand = {n: torch.zeros(params[n].shape, dtype=torch.float64) for n in names}
    for t in range(steps):
        sl = slice(t % 4 * 16, (t % 4 + 1) * 16)
        loss = model(input_ids=ids[sl], labels=labels[sl]).loss
        opt.zero_grad()
        loss.backward()
        for n in names:
            by_hand[n] -= params[n].detach().double() * params[n].grad.double()
        opt.step()
        if t < steps - 1:
            pr.step()
            for n in names:  # the Pruner's scores are the same sums, taken from the training run itself
                assert torch.allclose(pr.scores[n], by_hand[n], rtol=1e-6, atol=1e-12)
    end = {n: params[n].detach().clone() for n in names}
    pr.step()
    assert pr.sparsity == pytest.approx(0.5, abs=0.01)

    moved = torch.cat([(end[n].abs() - start[n].abs()).flatten() for n in names])
    movement_keep = torch.cat([pr.masks[n].flatten() for n in names])
    magnitude_keep = torch.zeros_like(movement_keep)
    offset = 0
    for n in names:  # magnitude pruning at the same ratio, per tensor
        k = end[n].numel() - int(0.5 * end[n].numel())
        top = end[n].abs().flatten().argsort(descending=True, stable=True)[:k]
        magnitude_keep[offset + top] = True
        offset += end[n].numel()
    only_movement = movement_keep & ~magnitude_keep
    only_magnitude = magnitude_keep & ~movement_keep
    assert only_movement.float().mean() > 0.05  # the two choose differently
    # Movement keeps weights that fine-tuning moved away from zero, and drops large ones moving towards it.
    assert moved[only_movement].mean() > 0 > moved[only_magnitude].mean()
    assert moved[movement_keep].mean() > moved[~movement_keep].mean()


def test_heads_pruned_during_training_come_out_physically_removed():
    model = tiny_bert(heads=4)
    ids, labels = task(16, 1)
    pr = sc.Pruner(model, {"input_ids": ids[:2]}, sc.OneShot(step=2, sparsity=0.5), granularity="head")
    assert sorted(pr.targets.values()) == [4, 4]  # one group of 4 heads per layer
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(4):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        pr.step()
    assert pr.sparsity == 0.5
    small = pr.finalize().eval()
    model.eval()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in plain_parameters(model).values())
    assert small.bert.encoder.layer[0].attention.self.query.out_features == 16
    assert torch.allclose(small(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
