"""A text classifier fed int64 token ids and an attention mask: an example user file.

    autotune study --model studies/examples/token_classifier.py:STUDY --trials 20

The task (learnt from scratch by ``python -m studies.training.train_examples``): each
sequence holds 4 to 32 tokens of a 64-token vocabulary, padded to 32; the label is which of
4 token groups (id % 4) occurs most often among the real tokens. The model embeds the
tokens, mixes them with one self-attention layer (padding masked out), pools them and
classifies: 6 Linear layers for the dtype map, an embedding it leaves alone, and inputs the
tuner must never cast (int64 ids, an int64 mask).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from studies import Study

VOCAB, SEQ_LEN, GROUPS, WIDTH = 64, 32, 4, 64
WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "example_token_classifier.pt"


class TokenClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.mix = nn.Linear(WIDTH, WIDTH)
        self.hidden = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, GROUPS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        keep = attention_mask.bool()
        scores = self.q(h) @ self.k(h).transpose(1, 2) / WIDTH**0.5
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        h = h + self.mix(scores.softmax(-1) @ self.v(h))
        pooled = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        return self.head(torch.relu(self.hidden(pooled)))


def make_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`n` sequences with their masks and labels, the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, SEQ_LEN), generator=gen)
    lengths = torch.randint(4, SEQ_LEN + 1, (n,), generator=gen)
    mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # padding is token 0
    counts = torch.stack([((ids % GROUPS == g) & mask.bool()).sum(1) for g in range(GROUPS)], 1)
    labels = (counts * GROUPS + torch.arange(GROUPS)).argmax(1)  # ties: the lowest group
    return {"input_ids": ids, "attention_mask": mask}, labels


class TokenClassifierStudy(Study):
    name = "token_classifier"
    description = "attention text classifier over int64 token ids + mask, 6 Linears"
    max_batch_size = 2048

    def build_model(self) -> nn.Module:
        model = TokenClassifier()
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        return model.eval()

    def eval_data(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return make_data(2000, seed=1)


STUDY = TokenClassifierStudy()
