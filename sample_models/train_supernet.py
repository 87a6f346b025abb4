"""Train the bundled OFA supernets and precompute their evolutionary searches.

    nice -n 19 .venv/bin/python sample_models/train_supernet.py                  # both
    nice -n 19 .venv/bin/python sample_models/train_supernet.py --only resnet20
    nice -n 19 .venv/bin/python sample_models/train_supernet.py --search-only    # re-search

For each sample model (``mobilenetv2_small``, ``resnet20``):

1. Start from the trained sample weights (``sample_models/<name>.safetensors``) when they exist,
   else from a fresh initialisation; record which.
2. ``OFAPruner(model, input).ofa_model([0.5, 0.75, 1], channel_divisible=8)``.
3. Sandwich-rule training (max, min and two random subnets per batch, gradient clipping 1.0)
   on the bundled 10k Fashion-MNIST training subset, SGD + Nesterov with a cosine schedule;
   distillation from the sample model when it is a trained one (cross-entropy alone otherwise).
4. Accuracy of the max and min subnets (BN re-calibrated on 20 training batches) on the
   bundled 2k test subset, then ``<name>_supernet.safetensors`` + ``<name>_supernet.json``.
5. Evolutionary search over the whole MACs span of the supernet (calibration: 8 fixed random
   training batches of 64; evaluation: the first 500 bundled test images), saved as
   ``<name>_supernet_evolution.json`` (full history, Pareto set and front) and
   ``<name>_supernet_pareto.json`` (the guide's Pareto-set file).

Seeds fixed; 2 threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train.py: faster on a shared machine

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from uif_explorer.data import torch_dataset, torch_loader  # noqa: E402
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy  # noqa: E402
from uif_explorer.torch.ofa import (  # noqa: E402
    OFAPruner,
    get_static_subnet,
    load_supernet,
    run_evolutionary_search,
    sample_subnet,
    save_subnet_config,
    save_supernet,
    train,
)
from uif_explorer.zoo import build_torch, example_input, get_sample, load_torch_sample  # noqa: E402

OUT = REPO / "sample_models"
RECIPES = {
    # epochs, learning rate from trained sample weights / from scratch, macs_step of the
    # search (fitted to the supernet's MACs span)
    "mobilenetv2_small": {"epochs": 5, "lr": 0.02, "lr_scratch": 0.1, "macs_step": 0.25},
    "resnet20": {"epochs": 4, "lr": 0.02, "lr_scratch": 0.1, "macs_step": 1.0},
}
SEARCH = {"parent_popu_size": 16, "iteration": 10, "mutate_size": 8, "mutate_prob": 0.2,
          "crossover_size": 4}
EVAL_IMAGES = 500


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def base_model(name: str) -> tuple[torch.nn.Module, str]:
    if get_sample(name).weights_path.exists():
        return load_torch_sample(name), "trained sample weights"
    torch.manual_seed(0)
    return build_torch(name).eval(), "fresh initialisation (no trained sample weights yet)"


def fixed_batches(split: str, images: int, batch_size: int, seed: int) -> list:
    """A fixed random subset as a list of (x, y) batches (the same every time it is read)."""
    x, y = torch_dataset(split).tensors
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:images]
    return [(x[idx[i:i + batch_size]], y[idx[i:i + batch_size]])
            for i in range(0, images, batch_size)]


def calibrate(model: torch.nn.Module, loader, batches: int) -> None:
    adaptive_bn_calibration(model, loader, number_forward=batches)


def subnet_accuracy(ofa_model, mode: str, train_loader, test_loader) -> tuple[float, float]:
    _, setting = sample_subnet(ofa_model, mode)
    static, _, macs, _ = get_static_subnet(ofa_model, setting)
    calibrate(static, train_loader, 20)
    sample_subnet(ofa_model, "max")
    return top1_accuracy(static, test_loader), macs


def train_one(name: str, epochs: int, recipe: dict, max_batches: int | None = None) -> None:
    torch.manual_seed(0)
    model, base = base_model(name)
    # from trained weights a high rate only destroys them (measured: ResNet-20 at lr 0.1 for
    # 3 epochs fell from 92.8 % to 80 %); from scratch it is needed
    lr = recipe["lr"] if base.startswith("trained") else recipe["lr_scratch"]
    pruner = OFAPruner(model, example_input(name), name=f"{name}_supernet")
    ofa_model = pruner.ofa_model([0.5, 0.75, 1], channel_divisible=8)
    teacher = model if base.startswith("trained") else None
    train_loader = torch_loader("train", batch_size=128, seed=0)
    test_loader = torch_loader("test", batch_size=500)
    log(f"{name}: base = {base}; {len(ofa_model.ofa_space.groups)} elastic groups; "
        f"{epochs} epochs of sandwich training on the bundled 10k subset")
    start = time.perf_counter()

    def progress(done: int, total: int, info: dict) -> None:
        if done % 10 == 0 or done == total:
            log(f"  step {done}/{total} loss {info['loss']:.3f} lr {info['lr']:.4f}")

    table = train(ofa_model, teacher, train_loader, epochs=epochs, lr=lr, progress=progress,
                  seed=0, max_batches=max_batches)
    seconds = time.perf_counter() - start
    log(f"{name}: trained in {seconds:.0f} s\n{table.to_string(index=False)}")
    calib_loader = torch_loader("train", batch_size=128, seed=1)
    acc_max, macs_max = subnet_accuracy(ofa_model, "max", calib_loader, test_loader)
    acc_min, macs_min = subnet_accuracy(ofa_model, "min", calib_loader, test_loader)
    acc_orig = top1_accuracy(model, test_loader)
    log(f"{name}: bundled test top-1: original {acc_orig:.2f} %, max subnet {acc_max:.2f} % "
        f"({macs_max:.3f} M MACs), min subnet {acc_min:.2f} % ({macs_min:.3f} M MACs)")
    save_supernet(
        ofa_model, OUT / f"{name}_supernet", sample=name, base=base,
        training={"epochs": epochs, "lr": lr, "batch_size": 128, "optimizer": "sgd nesterov 0.9",
                  "schedule": "cosine", "data": "bundled 10k Fashion-MNIST train subset",
                  "distillation": teacher is not None, "seconds": round(seconds, 1),
                  "threads": torch.get_num_threads(), "loss_per_epoch": table["loss"].tolist(),
                  "command": f"sample_models/train_supernet.py --only {name}"},
        accuracy={"test_data": "bundled 2k Fashion-MNIST test subset, top-1 %",
                  "original": acc_orig, "max_subnet": acc_max, "min_subnet": acc_min,
                  "bn_calibration": "20 training batches of 128"},
        macs={"max_subnet": macs_max, "min_subnet": macs_min},
    )


def search_one(name: str, macs_step: float, search: dict | None = None) -> None:
    model, _ = base_model(name)
    _, ofa_model = load_supernet(model, example_input(name), OUT / f"{name}_supernet",
                                 name=f"{name}_supernet")
    # fixed batches: a subnet's score must not depend on when it is evaluated
    calib_loader = fixed_batches("train", 8 * 64, 64, seed=2)
    val_loader = torch_loader("test", limit=EVAL_IMAGES, batch_size=EVAL_IMAGES)

    def calibration_fn(model, loader):
        calibrate(model, loader, 8)

    start = time.perf_counter()
    pareto = run_evolutionary_search(
        ofa_model, calibration_fn, (calib_loader,), top1_accuracy, (val_loader,), "acc1",
        "max", macs_step=macs_step, workdir=OUT, name=f"{name}_supernet", forced=True,
        **(search or SEARCH))
    save_subnet_config(pareto, OUT / f"{name}_supernet_pareto.json")
    log(f"{name}: search of {len(pareto.history)} subnets in {time.perf_counter() - start:.0f}"
        f" s, {len(pareto)} MACs bins -> {pareto.path}")
    for key, entry in pareto.items():
        log(f"  {key:>6} M MACs bin: {entry['acc1']:.1f} % ({entry['macs']:.3f} M MACs, "
            f"{entry['net_id']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(RECIPES), action="append")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--search-only", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 batches, a 6-subnet search, files under --out")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: here)")
    args = ap.parse_args()
    global OUT
    OUT = args.out or OUT
    torch.set_num_threads(2)
    quick = {"parent_popu_size": 4, "iteration": 1, "mutate_size": 1, "mutate_prob": 0.2,
             "crossover_size": 1}
    for name in args.only or list(RECIPES):
        recipe = RECIPES[name]
        if not args.search_only:
            train_one(name, args.epochs or recipe["epochs"], recipe,
                      max_batches=2 if args.quick else None)
        search_one(name, recipe["macs_step"], quick if args.quick else None)


if __name__ == "__main__":
    main()
