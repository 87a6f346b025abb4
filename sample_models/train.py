"""Train the sample models on the full Fashion-MNIST set, reproducibly.

    .venv/bin/python sample_models/train.py                  # all seven, one after another
    .venv/bin/python sample_models/train.py --only resnet20  # one model
    .venv/bin/python sample_models/train.py --only vgg_small --epochs 8

Data: the full 60k/10k Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``). Each model is evaluated on the full 10k test set and
on the bundled 2k test subset. Writes ``sample_models/<name>.safetensors`` (PyTorch state dict)
or ``sample_models/<name>.keras`` and merges its numbers into ``sample_models/metrics.json``.
Seeds are fixed; two threads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# OpenMP threads that sleep instead of spinning while they wait: on a shared 2-core machine
# spinning made a step up to 10x slower (measured). Read when torch loads, so set it first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch (and everything that loads torch._dynamo) must be imported before TensorFlow:
# the other order segfaults (docs: environment.md, "Crash trap").
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from uif_explorer import data  # noqa: E402
from uif_explorer.torch.macs import count_macs  # noqa: E402
from uif_explorer.zoo import SAMPLE_MODELS, SampleModel  # noqa: E402

SEED = 0
THREADS = 2
OUT_DIR = REPO / "sample_models"


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float = 0.1
    batch_size: int = 128
    channels_last: bool = False
    augment: bool = True  # random crop (2 px padding) + horizontal flip


RECIPES: dict[str, Recipe] = {
    "resnet20": Recipe(epochs=10, lr=0.15, channels_last=True),
    "mobilenetv2_small": Recipe(epochs=8, lr=0.15, channels_last=True),
    "vgg_small": Recipe(epochs=5, lr=0.05, channels_last=True),
    "densenet_mini": Recipe(epochs=4, lr=0.1),
    "se_resnet_mini": Recipe(epochs=5, lr=0.1, channels_last=True),
    # the guide's tiny convnet underfits rather than overfits: no augmentation
    "keras_convnet": Recipe(epochs=15, lr=2e-3, augment=False),
    "keras_functional": Recipe(epochs=8, lr=2e-3),
}


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------
# PyTorch


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero-padded by ``pad`` in normalised space = background) + h-flip."""
    n, _, h, w = x.shape
    background = (0.0 - data.MEAN) / data.STD
    padded = F.pad(x, (pad, pad, pad, pad), value=background)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def torch_accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool = False
) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        xb = x[i : i + 1000]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        correct += int((model(xb).argmax(1) == y[i : i + 1000]).sum())
    return 100.0 * correct / len(x)


def torch_arrays(split: str, source: str, limit: int | None = None):
    ds = data.torch_dataset(split, source, limit)
    return ds.tensors


def train_torch(
    sample: SampleModel, recipe: Recipe, epochs: int, out_dir: Path, max_batches: int | None
) -> dict:
    seed_everything()
    model = sample.build()
    x_train, y_train = torch_arrays("train", "full")
    x_full, y_full = torch_arrays("test", "full")
    x_bund, y_bund = torch_arrays("test", "bundled")
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, momentum=0.9, nesterov=True,
    )
    steps_per_epoch = (len(x_train) + recipe.batch_size - 1) // recipe.batch_size
    if max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, max_batches)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.15, div_factor=10.0, final_div_factor=100.0,
    )
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total_loss, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            xb = augment(x_train[idx], gen) if recipe.augment else x_train[idx]
            xb = xb.contiguous(memory_format=memory_format)
            yb = y_train[idx]
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
        # progress only: the first 2k images of the full test set (the final numbers are below)
        acc = torch_accuracy(model, x_full[:2000], y_full[:2000], recipe.channels_last)
        log(
            f"{sample.name} epoch {epoch + 1}/{epochs} loss {total_loss / seen:.4f} "
            f"test[:2000] {acc:.2f}% ({time.perf_counter() - start:.0f} s)"
        )
    train_seconds = time.perf_counter() - start

    model = model.to(memory_format=torch.contiguous_format).eval()
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    path = out_dir / sample.weights_file
    save_file(state, str(path), metadata={"format": "pt", "model": sample.name})
    # Reload the saved file into a fresh model: the numbers recorded are the file's numbers.
    from uif_explorer.zoo import resolve_builder

    check = resolve_builder(sample.builder)()
    from safetensors.torch import load_file

    check.load_state_dict(load_file(str(path)), strict=True)
    check.eval()
    return {
        "acc_full_test": round(torch_accuracy(check, x_full, y_full), 2),
        "acc_bundled_test": round(torch_accuracy(check, x_bund, y_bund), 2),
        "params": sum(p.numel() for p in check.parameters()),
        "macs": int(count_macs(check, torch.zeros(sample.input_shape))),
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
    }


# ------------------------------------------------------------------------------------------
# Keras


def keras_macs(model) -> int:
    """MACs of Conv / Dense / DepthwiseConv / SeparableConv layers, from output shapes."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.SeparableConv2D | keras.layers.DepthwiseConv2D):
            in_ch = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            mult = layer.depth_multiplier
            oh, ow = layer.output.shape[1:3]
            total += oh * ow * in_ch * mult * kh * kw
            if isinstance(layer, keras.layers.SeparableConv2D):
                total += oh * ow * in_ch * mult * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            in_ch = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            oh, ow, oc = layer.output.shape[1:4]
            total += oh * ow * oc * kh * kw * in_ch // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            in_features = layer.input.shape[-1]
            leading = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
            total += leading * in_features * layer.units
    return int(total)


def keras_augment(x: np.ndarray, rng: np.random.Generator, pad: int = 2) -> np.ndarray:
    """The same augmentation as PyTorch's, in NHWC numpy."""
    n, h, w, _ = x.shape
    background = (0.0 - data.MEAN) / data.STD
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=background)
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out.astype(np.float32)


def train_keras(
    sample: SampleModel, recipe: Recipe, epochs: int, out_dir: Path, max_batches: int | None,
    threads: int = THREADS,
) -> dict:
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    seed_everything()
    keras.utils.set_random_seed(SEED)

    x_train, y_train = data.numpy_dataset("train", "full")
    x_full, y_full = data.numpy_dataset("test", "full")
    x_bund, y_bund = data.numpy_dataset("test", "bundled")
    model = sample.build()
    steps = (len(x_train) + recipe.batch_size - 1) // recipe.batch_size
    if max_batches is not None:
        steps = min(steps, max_batches)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.lr / 10, decay_steps=epochs * steps, alpha=0.01,
        warmup_target=recipe.lr, warmup_steps=max(1, steps // 2),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))[: steps * recipe.batch_size]
        xb = keras_augment(x_train[order], rng) if recipe.augment else x_train[order]
        hist = model.fit(
            xb, y_train[order], batch_size=recipe.batch_size, epochs=1, shuffle=False, verbose=0
        )
        acc = 100.0 * model.evaluate(x_full, y_full, batch_size=1000, verbose=0)[1]
        log(
            f"{sample.name} epoch {epoch + 1}/{epochs} loss {hist.history['loss'][-1]:.4f} "
            f"test {acc:.2f}% ({time.perf_counter() - start:.0f} s)"
        )
    train_seconds = time.perf_counter() - start

    path = out_dir / sample.weights_file
    model.save(str(path))
    check = keras.saving.load_model(str(path), safe_mode=True)

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        pred = check.predict(x, batch_size=1000, verbose=0).argmax(-1)
        return round(100.0 * float((pred == y).mean()), 2)

    return {
        "acc_full_test": accuracy(x_full, y_full),
        "acc_bundled_test": accuracy(x_bund, y_bund),
        "params": int(check.count_params()),
        "macs": keras_macs(check),
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
    }


# ------------------------------------------------------------------------------------------


def merge_metrics(path: Path, name: str, entry: dict) -> None:
    """Merge one model's entry into metrics.json, atomically (tmp file, fsync, rename)."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[name] = entry
    metrics = {k: metrics[k] for k in sorted(metrics, key=_order)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".metrics-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(metrics, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _order(name: str) -> int:
    names = list(SAMPLE_MODELS)
    return names.index(name) if name in names else len(names)


def markdown_table(path: Path) -> str:
    """The README's table, from metrics.json."""
    metrics = json.loads(path.read_text())
    lines = [
        "| model | framework | params | MACs (M) | acc. full 10k test (%) "
        "| acc. bundled 2k test (%) | epochs | train time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        fw = SAMPLE_MODELS[name].framework if name in SAMPLE_MODELS else "?"
        lines.append(
            f"| `{name}` | {fw} | {m['params']:,} | {m['macs'] / 1e6:.2f} | "
            f"{m['acc_full_test']:.2f} | {m['acc_bundled_test']:.2f} | {m['epochs']} | "
            f"{m['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=list(SAMPLE_MODELS), action="append",
                        help="train only this model (repeatable)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--max-batches", type=int, help="smoke test: batches per epoch")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR,
                        help="where weights and metrics.json go (default: sample_models/)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"CPU threads for torch / TensorFlow (default {THREADS})")
    parser.add_argument("--table", action="store_true",
                        help="print metrics.json as the README's markdown table and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.out_dir / "metrics.json"))
        return 0

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SAMPLE_MODELS)
    for name in names:
        sample = SAMPLE_MODELS[name]
        recipe = RECIPES[name]
        epochs = args.epochs or recipe.epochs
        log(f"training {name} for {epochs} epochs")
        if sample.framework == "torch":
            entry = train_torch(sample, recipe, epochs, args.out_dir, args.max_batches)
        else:
            entry = train_keras(
                sample, recipe, epochs, args.out_dir, args.max_batches, args.threads
            )
        weights = args.out_dir / sample.weights_file
        weights.chmod(0o644)
        size = weights.stat().st_size
        log(f"{name}: {json.dumps(entry)} file {size / 1e6:.2f} MB")
        merge_metrics(args.out_dir / "metrics.json", name, entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
