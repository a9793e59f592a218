"""Replacement modules for layers whose PyTorch form cannot hold a pruned shape.

``nn.MultiheadAttention`` insists that its inner width (heads x head_dim) equals its embedding
width; once heads are removed that no longer holds, so surgery swaps in ``SlimMultiheadAttention``:
the same parameters and attributes, a forward that reads its widths from the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SlimMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose heads x head_dim may differ from ``embed_dim`` (packed q/k/v only)."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1 - int(self.batch_first)) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        tgt, n, _ = query.shape
        src = key.shape[0]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(tgt, n, -1, self.head_dim).permute(1, 2, 0, 3)
        k = F.linear(key, w_k, b_k).view(src, n, -1, self.head_dim).permute(1, 2, 0, 3)
        v = F.linear(value, w_v, b_v).view(src, n, -1, self.head_dim).permute(1, 2, 0, 3)
        mask = _additive_mask(attn_mask, key_padding_mask, q, n, tgt, src)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) * self.head_dim ** -0.5
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                future = torch.ones(tgt, src, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            attn = F.dropout(scores.softmax(-1), p)
            out = attn @ v
            weights = attn.mean(1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None)
        out = F.linear(out.permute(2, 0, 1, 3).reshape(tgt, n, -1), self.out_proj.weight, self.out_proj.bias)
        if self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1 - int(self.batch_first))
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights


def _additive_mask(attn_mask, key_padding_mask, q, n, tgt, src):
    """Merge nn.MultiheadAttention's two mask arguments into one float mask for (N, H, L, S) scores."""
    mask = None
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros_like(m, dtype=q.dtype).masked_fill(m, float("-inf"))
        mask = m.view(n, -1, tgt, src) if m.dim() == 3 else m.view(1, 1, tgt, src)
    if key_padding_mask is not None:
        k = key_padding_mask
        if k.dtype == torch.bool:
            k = torch.zeros_like(k, dtype=q.dtype).masked_fill(k, float("-inf"))
        k = k.view(n, 1, 1, src).to(q.dtype)
        mask = k if mask is None else mask + k
    return mask


def sync_multihead(mod: nn.MultiheadAttention) -> None:
    """Bring a (possibly sliced) nn.MultiheadAttention's sizes in line with its weights."""
    if mod.in_proj_weight is None:
        return
    inner = mod.in_proj_weight.shape[0] // 3
    mod.embed_dim = mod.out_proj.weight.shape[0]
    mod.kdim = mod.vdim = mod.in_proj_weight.shape[1]
    mod.head_dim = inner // mod.num_heads
    if inner != mod.embed_dim or mod.kdim != mod.embed_dim:
        mod.__class__ = SlimMultiheadAttention
