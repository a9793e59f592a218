"""Pruned BERT, GPT-2 and Llama (random configs) saved with save_hf and rebuilt in a fresh, offline process."""
import json
import os
import subprocess
import sys

import pytest
import torch
import transformers as T

import secateurs as sc
from secateurs.io.hf import load_hf, save_hf
from tests.zoo.test_transformers import bert, gpt2, llama

IDS = torch.tensor([[5, 17, 33, 2, 90, 11, 7], [1, 2, 3, 4, 5, 6, 7]])

LOADER = """
import json, sys, torch
from secateurs.io.hf import load_hf
ids = torch.tensor(json.loads(sys.argv[1]))
out = {}
for d in sys.argv[2:]:
    with torch.no_grad():
        out[d] = load_hf(d)(input_ids=ids).logits.tolist()
print(json.dumps(out))
"""


def test_fresh_process_rebuilds_pruned_models(tmp_path):
    expected = {}
    for name, make in (("bert", bert), ("gpt2", gpt2), ("llama", llama)):
        model = make().eval()
        small = sc.prune(model, {"input_ids": IDS}, ratio=0.25, granularity="head")
        directory = tmp_path / name
        save_hf(small, directory, compressed=name == "gpt2")
        assert not any(f.suffix in (".bin", ".pt", ".pkl") for f in directory.iterdir())
        with torch.no_grad():
            expected[str(directory)] = small(input_ids=IDS).logits
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.path.dirname(os.path.dirname(sc.__file__)))
    run = subprocess.run([sys.executable, "-c", LOADER, json.dumps(IDS.tolist()), *expected], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for d, ref in expected.items():
        torch.testing.assert_close(torch.tensor(got[d]), ref, atol=1e-5, rtol=1e-5)


def test_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["os.system"]}))
    with pytest.raises(ValueError, match=r"names architecture \['os.system'\], which is not a model class"):
        load_hf(tmp_path)
    with pytest.raises(TypeError, match="must be a transformers PreTrainedModel"):
        save_hf(torch.nn.Linear(2, 2), tmp_path)


def test_head_pruned_model_keeps_its_base_config(tmp_path):
    model = T.BertForSequenceClassification(T.BertConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, vocab_size=120)).eval()
    small = sc.prune(model, {"input_ids": IDS}, ratio=0.25, granularity="head")
    save_hf(small, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_attention_heads"] == 4 and saved["architectures"] == ["BertForSequenceClassification"]
    assert load_hf(tmp_path).bert.encoder.layer[0].attention.self.query.out_features == 48


def test_uniform_mlp_width_round_trips_through_from_pretrained(tmp_path):
    from secateurs.io.hf import pretrained_config, save_pretrained

    model = bert().eval()
    ratios = {n: 0.3 for n, _ in model.named_modules() if n.endswith("intermediate.dense")}
    small = sc.prune(model, {"input_ids": IDS}, ratio=0.0, ratios=ratios)
    assert pretrained_config(small).intermediate_size == 112 and small.config.intermediate_size == 160
    save_pretrained(small, tmp_path)
    loaded = T.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, small(input_ids=IDS).logits)


def test_removed_heads_are_not_expressible_in_a_config():
    from secateurs.io.hf import pretrained_config

    small = sc.prune(bert().eval(), {"input_ids": IDS}, ratio=0.25, granularity="head")
    with pytest.raises(ValueError, match="not expressible in its config.*save_hf"):
        pretrained_config(small)
