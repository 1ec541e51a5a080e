"""Train the example user models (`studies/examples`) and write their weights.

    python -m studies.training.train_examples

Data comes from the examples' own generators (training seed 0; the studies score seed 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studies.examples import regressor, token_classifier


def _train(model, data, loss_fn, steps: int, lr: float, batch: int = 256) -> None:
    inputs, labels = data
    n = len(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss = loss_fn(model(**{k: v[idx] for k, v in inputs.items()}), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tc = token_classifier.TokenClassifier()
    _train(tc, token_classifier.make_data(50_000, seed=0), F.cross_entropy, 3000, 3e-3)
    inputs, labels = token_classifier.make_data(2000, seed=1)
    with torch.no_grad():
        acc = (tc(**inputs).argmax(1) == labels).double().mean().item()
    torch.save(tc.state_dict(), token_classifier.WEIGHTS)
    print(f"token_classifier: top-1 {100 * acc:.2f}% on the study's 2000 sequences")

    reg = regressor.Regressor()

    def mse(out, y):
        return F.mse_loss(out["prediction"], y)

    _train(reg, regressor.make_data(50_000, seed=0), mse, 4000, 3e-3)
    inputs, labels = regressor.make_data(4000, seed=1)
    with torch.no_grad():
        err = regressor.rmse(reg(**inputs)["prediction"], labels)
    torch.save(reg.state_dict(), regressor.WEIGHTS)
    print(f"regressor: RMSE {err:.4f} on the study's 4000 rows (target std {labels.std():.3f})")


if __name__ == "__main__":
    main()
