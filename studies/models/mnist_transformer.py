"""A small pre-norm transformer classifier over MNIST: the 28 image rows are the tokens.

Every projection is its own ``nn.Linear`` (no fused ``in_proj`` as in ``nn.MultiheadAttention``)
so the dtype map can lower each one separately: 6 per block (q, k, v, out, fc1, fc2), plus the
row embedding and the classifier head. Parameter names are stable, e.g.
``blocks.0.attn.q_proj.weight`` and ``blocks.3.ffn.fc2.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

D_MODEL = 64
N_HEADS = 4
N_LAYERS = 4
D_FFN = 128
N_TOKENS = 28  # image rows
TOKEN_DIM = 28  # pixels per row
N_CLASSES = 10


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape  # [N, T, D] -> [N, H, T, D / H]
        return x.view(n, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ffn: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ffn)
        self.fc2 = nn.Linear(d_ffn, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class MNISTTransformer(nn.Module):
    """[N, 1, 28, 28] normalised images -> [N, 10] log-probabilities (like the CNN)."""

    def __init__(
        self,
        d_model: int = D_MODEL,
        n_heads: int = N_HEADS,
        n_layers: int = N_LAYERS,
        d_ffn: int = D_FFN,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(TOKEN_DIM, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, N_TOKENS, d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ffn) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.squeeze(1))  # [N, 28 rows, 28 pixels] -> [N, 28, D]
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).mean(dim=1)
        return F.log_softmax(self.head(x), dim=1)
