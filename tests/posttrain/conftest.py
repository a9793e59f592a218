"""Tiny models for post-training pruning tests: Hugging Face BERT, GPT-2 and Llama (GQA) from configs,
and a stack of MLP blocks."""
import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Block(nn.Module):
    """A residual MLP block (what a transformer's FFN looks like)."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.up, self.down = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Stack(nn.Module):
    """Input layer, a ModuleList of blocks, a head: the shape post-training pruning expects."""

    def __init__(self, d: int = 16, h: int = 32, n: int = 3, d_in: int = 8):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(n))
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def hf_model(kind: str) -> nn.Module:
    """A randomly initialised 2-layer, 64-wide Hugging Face model of the given family, in eval mode."""
    import transformers as T
    torch.manual_seed(0)
    if kind == "bert":
        m = T.BertModel(T.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64))
    elif kind == "gpt2":
        m = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                           bos_token_id=0, eos_token_id=0))
    else:
        m = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                             max_position_embeddings=64))
    return m.eval()


@pytest.fixture
def stack():
    torch.manual_seed(0)
    return Stack().eval()


@pytest.fixture
def stack_batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(32, 8, generator=g) for _ in range(4)]


@pytest.fixture(scope="module", params=["bert", "gpt2", "llama"])
def hf(request):
    return request.param, hf_model(request.param)


def token_batches(n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 100, (4, 16), generator=g)} for _ in range(n)]
