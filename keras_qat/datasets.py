"""Data that needs no download: scikit-learn's digits, Debian's Fashion-MNIST, a sequence rule."""

import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# load_digits has 1797 images: the first 1500 train, the rest test.
DIGITS_TRAIN = 1500


def load_digits():
    """scikit-learn's 8x8 digits, scaled to [0, 1].

    Returns:
        `(x_train, y_train, x_test, y_test)`, images `(n, 8, 8, 1)` float32,
        1500 training and 297 test images.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    return x[:DIGITS_TRAIN], y[:DIGITS_TRAIN], x[DIGITS_TRAIN:], y[DIGITS_TRAIN:]


def _read_idx(path):
    """Reads a gzipped IDX file (the MNIST format) into an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = np.frombuffer(data, ">u4", count=dims, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(directory=FASHION_MNIST_DIR):
    """Fashion-MNIST (60 000 + 10 000 28x28 images) from Debian's dataset package.

    Args:
        directory: Where the `*-idx?-ubyte.gz` files are. Defaults to
            `FASHION_MNIST_DIR`.

    Returns:
        `(x_train, y_train, x_test, y_test)`, images `(n, 28, 28, 1)` float32 in [0, 1].

    Raises:
        FileNotFoundError: when the files are missing, saying how to install them.
    """
    parts = []
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            path = os.path.join(directory, f"{split}-{kind}-ubyte.gz")
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"Fashion-MNIST not found: {path} is missing. On Debian/Ubuntu: "
                    "apt-get install dataset-fashion-mnist"
                )
            parts.append(_read_idx(path))
    x_train, y_train, x_test, y_test = parts
    scale = np.float32(1 / 255)
    return (
        x_train[..., None] * scale,
        y_train.astype(np.int64),
        x_test[..., None] * scale,
        y_test.astype(np.int64),
    )


def load_pointer_sequences(train=20000, test=4000, length=16, vocabulary=16, seed=0):
    """Token sequences whose label is the token a pointer at their start points at.

    Each sequence's first token is a position p in 1..length-1, the others are
    random tokens; the label is the token at position p. Solving it needs
    attention to a position that depends on the input, the job of an
    attention block with positional embeddings.

    Args:
        train: Training sequences. Defaults to `20000`.
        test: Test sequences. Defaults to `4000`.
        length: Tokens per sequence. Defaults to `16`.
        vocabulary: Distinct tokens, and classes. Defaults to `16`.
        seed: Random seed. Defaults to `0`.

    Returns:
        `(x_train, y_train, x_test, y_test)`, tokens `(n, length)` int32,
        labels int64 in `[0, vocabulary)`.
    """
    rng = np.random.default_rng(seed)
    count = train + test
    x = rng.integers(0, vocabulary, size=(count, length), dtype=np.int32)
    x[:, 0] = rng.integers(1, length, size=count)
    y = x[np.arange(count), x[:, 0]].astype(np.int64)
    return x[:train], y[:train], x[train:], y[train:]


DATASETS = {"digits": load_digits, "fashion-mnist": load_fashion_mnist}
