"""Train the torchvision example (`studies/examples/vision_mnist.py`) and write its weights.

    V=$(tests/vision_venv/setup_venv.sh)
    PYTHONPATH=. "$V" -m studies.training.train_vision_example [--epochs 4]

Runs in the vision interpreter (torchvision must import). Trains on the first 8000 images of
the shipped MNIST test set; reports top-1 on the last 2000, which the study scores and
training never sees. Writes `studies/data/vision_mobilenet_mnist.pt` (a state_dict).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from studies.examples.vision_mnist import ARCH, BUILDER_KWARGS, WEIGHTS, mnist_split


def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Recompute BatchNorm's running statistics over the training images (a plain average).
    torchvision's MobileNetV3 keeps them with momentum 0.01, too slow to settle in a few
    hundred steps: without this the eval-mode model scores at chance."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in x.split(batch_size):
            model(batch)
    for bn in bns:
        bn.momentum = 0.01
    model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torchvision.models

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.get_model(ARCH, weights=None, **BUILDER_KWARGS)
    x, y = mnist_split(train=True)
    ex, ey = mnist_split(train=False)
    print(f"{sum(q.numel() for q in model.parameters())} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * -(-len(x) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(args.batch_size):
            # a small random shift: 8000 images are few
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,)))
            batch = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        calibrate_bn(model, x)
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out top-1 {top1(model, ex, ey):.4%}",
            flush=True,
        )
    torch.save(model.state_dict(), WEIGHTS)
    print(
        f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1e3:.0f} kB); held-out top-1 "
        f"{top1(model, ex, ey):.4%}; {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
