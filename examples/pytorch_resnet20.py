"""Worked example: the UIF guide's PyTorch coarse-grained pruning on the sample ResNet-20.

Mirrors section 4.1.3.1 of the guide with the bundled Fashion-MNIST subset:
iterative (ana -> prune(0.2) -> fine-tune -> save sparse and slim) and one-step
(search -> prune -> fine-tune). Runs on the CPU in a few minutes; ``--quick`` in seconds.

    .venv/bin/python examples/pytorch_resnet20.py [--quick] [--workdir .vai]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uif_explorer import get_pruning_runner  # noqa: E402
from uif_explorer.data import torch_loader  # noqa: E402
from uif_explorer.torch import (  # noqa: E402
    adaptive_bn_calibration,
    count_macs,
    fine_tune,
    top1_accuracy,
)
from uif_explorer.zoo import load_torch_sample  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny data and few steps (tests)")
    ap.add_argument("--workdir", default=".vai")
    ap.add_argument("--out", default="pruned_models")
    args = ap.parse_args()
    images = 200 if args.quick else 1000
    batches = 4 if args.quick else None
    ratios = (0.3, 0.6) if args.quick else (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = load_torch_sample("resnet20")
    val_loader = torch_loader("test", limit=images, batch_size=200)
    train_loader = torch_loader("train", batch_size=128)
    input_signature = torch.randn([1, 1, 28, 28], dtype=torch.float32)
    print(f"baseline: {top1_accuracy(model, val_loader):.2f}% on {images} test images")

    # -- iterative pruning -----------------------------------------------------------------
    runner = get_pruning_runner(model, input_signature, "iterative", workdir=args.workdir)
    runner.ana(top1_accuracy, args=(val_loader,), ratios=ratios)
    sparse = runner.prune(removal_ratio=0.2)
    print(f"sparse (20% MACs removed): {top1_accuracy(sparse, val_loader):.2f}%")
    fine_tune(sparse, train_loader, epochs=1, lr=0.01, teacher=model, max_batches=batches)
    print(f"after fine-tune: {top1_accuracy(sparse, val_loader):.2f}%")
    torch.save(sparse.state_dict(), out / "model_pruned.pth")
    torch.save(sparse.slim_state_dict(), out / "model_slim.pth")
    # The slim weights load into the slim architecture rebuilt from the spec:
    slim = runner.prune(spec_path=runner.workspace.latest_spec(), mode="slim")
    slim.load_state_dict(torch.load(out / "model_slim.pth", weights_only=True))
    print(f"slim model: {count_macs(slim, input_signature) / 1e6:.2f}M MACs "
          f"(original {count_macs(model, input_signature) / 1e6:.2f}M), "
          f"{top1_accuracy(slim, val_loader):.2f}%")

    # -- one-step pruning ------------------------------------------------------------------
    runner = get_pruning_runner(model, input_signature, "one_step", workdir=args.workdir)
    runner.search(gpus=["0"], calibration_fn=adaptive_bn_calibration,
                  calib_args=(torch_loader("train", limit=images, batch_size=100),),
                  eval_fn=top1_accuracy, eval_args=(val_loader,),
                  num_subnet=3 if args.quick else 20, removal_ratio=0.5)
    best = runner.prune(removal_ratio=0.5, index=None)
    print(f"one-step best (50% MACs removed): {top1_accuracy(best, val_loader):.2f}%")
    fine_tune(best, train_loader, epochs=1, lr=0.01, teacher=model, max_batches=batches)
    print(f"after fine-tune: {top1_accuracy(best, val_loader):.2f}%")
    torch.save(best.state_dict(), out / "model_one_step_slim.pth")


if __name__ == "__main__":
    main()
