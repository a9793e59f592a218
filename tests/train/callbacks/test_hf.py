import pytest
import torch

import secateurs as sc

transformers = pytest.importorskip("transformers")
from secateurs.train.callbacks.hf import PrunerCallback  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Data(torch.utils.data.Dataset):
    def __init__(self, n=48):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 64, (n, 12), generator=g)
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def test_hf_trainer_callback_prunes_a_tiny_bert_during_training(tmp_path):
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    sched = sc.Polynomial(0.0, 0.5, begin_step=2, end_step=6, frequency=2)
    pr = sc.Pruner(model, {"input_ids": torch.randint(1, 64, (2, 12))}, sched, criterion="movement",
                   ignore=["bert.embeddings", "classifier"])
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=8,
                                          learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                                          use_cpu=True, disable_tqdm=True)
    transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=[PrunerCallback(pr)]).train()
    assert pr.step_count == 8 and pr.sparsity == pytest.approx(0.5, abs=0.01)
    assert any(bool((s != 0).any()) for s in pr.scores.values())  # movement scores came from the Trainer's steps
    small = pr.finalize()
    w = small.bert.encoder.layer[0].intermediate.dense.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
