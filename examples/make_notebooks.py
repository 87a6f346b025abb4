"""Write the example notebooks (``examples/*.ipynb``) from the cell lists below.

The cells live here as plain Python strings so that a review reads code, not notebook JSON;
the ``.ipynb`` files are generated, with no outputs and stable cell ids (regenerating an
unchanged notebook changes nothing). After editing a cell:

    .venv/bin/python examples/make_notebooks.py          # rewrite every notebook
    .venv/bin/python examples/make_notebooks.py --check  # exit 1 if a notebook is stale

Every notebook writes its workspace (``.sens``, ``.search``, specs, weights) to
``$UIF_NOTEBOOK_WORKDIR`` or else a fresh temporary folder, never into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]  # ("md" | "code", source)

SETUP = '''\
import os
import sys
import tempfile
from pathlib import Path

try:
    import uif_explorer  # noqa: F401
except ImportError:  # opened from examples/ without the package installed: use the checkout
    sys.path.insert(0, str(Path.cwd().resolve().parent))

# Workspace files go to $UIF_NOTEBOOK_WORKDIR or a fresh temporary folder, not the repository.
WORKDIR = Path(os.environ.get("UIF_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="uif-nb-"))
WORKDIR.mkdir(parents=True, exist_ok=True)
print("workspace:", WORKDIR)'''

PYTORCH: list[Cell] = [
    ("md", """\
# Iterative and one-step pruning of the sample ResNet-20 (PyTorch)

The guide's coarse-grained pruning on the bundled sample ResNet-20 and the bundled
Fashion-MNIST subset, with tables and charts: the runner and its channel groups, a sensitivity
analysis with the app's *quick* preset, a plan preview, `prune(0.3)`, a short fine-tune, the slim
model and its size; then a one-step search over 8 candidates and the best one.
Budgets are tiny so the notebook runs on a CPU in a minute or two; scale them up for real
numbers (`docs/notebooks.md`)."""),
    ("code", SETUP),
    ("code", """\
import torch  # first: torch before anything that might load TensorFlow

from uif_explorer.present import charts

from uif_explorer import get_pruning_runner
from uif_explorer.services.analysis import SENS_PRESETS
from uif_explorer.data import torch_loader
from uif_explorer.torch import (
    adaptive_bn_calibration,
    count_macs,
    count_params,
    fine_tune,
    top1_accuracy,
)
from uif_explorer.zoo import example_input, load_torch_sample

torch.manual_seed(0)
model = load_torch_sample("resnet20")
inputs = example_input("resnet20")  # (1, 1, 28, 28): MACs are counted at batch 1
preset = SENS_PRESETS[0]  # the app's quick preset: 200 images, ratios 0.3 / 0.6
val_loader = torch_loader("test", limit=preset.images, batch_size=200)
train_loader = torch_loader("train", batch_size=128)
print(preset.label)
baseline = top1_accuracy(model, val_loader)
print(f"unpruned top-1: {baseline:.2f}% on {preset.images} test images")"""),
    ("md", """\
## The runner and its channel groups

A *group* is a set of layers whose channels must be pruned together (residual adds tie every
block of a stage). The runner's notebook view lists its MACs, params and workspace files."""),
    ("code", """\
runner = get_pruning_runner(model, inputs, "iterative", workdir=WORKDIR)
runner"""),
    ("code", "runner.groups_frame()"),
    ("md", """\
## Sensitivity analysis

Each group is pruned alone at each ratio and the model is scored; the analysis is saved after
every evaluation (`<model>.sens`), so an interrupted run resumes."""),
    ("code", """\
sens = runner.ana(top1_accuracy, args=(val_loader,), ratios=preset.ratios)
runner.sensitivity_frame()"""),
    ("code", "charts.sensitivity_figure(sens)"),
    ("md", """\
## Plan preview, then prune 30% of the MACs

`plan` computes what `prune` would do (per-group ratios, MACs, params, the score the analysis
predicts) without building a model."""),
    ("code", """\
preview = runner.plan(0.3)
print(f"{preview.original_macs:.2f} M -> {preview.macs:.2f} M MACs "
      f"({preview.achieved_removal:.1%} removed), params {preview.params:.4f} M, "
      f"predicted score {preview.predicted_score:.1f} (baseline {preview.baseline:.1f})")
preview.groups"""),
    ("code", """\
sparse = runner.prune(removal_ratio=0.3)
before_tuning = top1_accuracy(sparse, val_loader)
print(f"sparse model, 30% MACs removed: {before_tuning:.2f}%")"""),
    ("md", "A short fine-tune (4 batches of 128, distilling from the original model):"),
    ("code", """\
history = fine_tune(sparse, train_loader, epochs=1, lr=0.01, teacher=model, max_batches=4)
after_tuning = top1_accuracy(sparse, val_loader)
print(f"after fine-tuning: {after_tuning:.2f}% (was {before_tuning:.2f}%)")
history"""),
    ("md", """\
## The slim model

The sparse model keeps the original shapes (pruned channels are zero); the slim model has the
smaller layers. Both come from the same spec, so their outputs agree."""),
    ("code", """\
import pandas as pd

slim = runner.prune(spec_path=runner.workspace.latest_spec(), mode="slim")
slim.load_state_dict(sparse.slim_state_dict())
x = next(iter(val_loader))[0][:32]
with torch.no_grad():
    a, b = slim.eval()(x), sparse.eval()(x)
rel = (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()
assert rel < 1e-4, rel


def size_mb(m: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in m.state_dict().values()) / 2**20


pd.DataFrame({
    "MACs (M)": [count_macs(model, inputs) / 1e6, count_macs(slim, inputs) / 1e6],
    "params (M)": [count_params(model) / 1e6, count_params(slim) / 1e6],
    "state dict (MiB)": [size_mb(model), size_mb(slim)],
    "top-1 (%)": [top1_accuracy(model, val_loader), top1_accuracy(slim, val_loader)],
}, index=["original", "slim"]).round(4)"""),
    ("code", "charts.model_width_figure(model, slim)"),
    ("md", """\
## One-step search

EagleEye-style: sample candidate plans that each remove 30% of the MACs, score each after
adaptive BatchNorm calibration, prune the best. Candidates keep stable ids; `rank` is computed
from the scores."""),
    ("code", """\
one_step = get_pruning_runner(model, inputs, "one_step", workdir=WORKDIR)
calib_loader = torch_loader("train", limit=128, batch_size=64, shuffle=False)
search = one_step.search(calibration_fn=adaptive_bn_calibration, calib_args=(calib_loader,),
                         eval_fn=top1_accuracy, eval_args=(val_loader,),
                         num_subnet=8, removal_ratio=0.3)
one_step.search_frame(0.3)"""),
    ("code", "charts.candidates_figure(search)"),
    ("code", """\
table = one_step.search_frame(0.3)
top_two = table.dropna(subset=["rank"]).sort_values("rank")["id"].head(2).tolist()
charts.candidate_ratios_figure(search, top_two)"""),
    ("code", """\
best = one_step.prune(removal_ratio=0.3)  # index=None: the best candidate, as a slim model
print(f"best candidate: {count_macs(best, inputs) / 1e6:.2f} M MACs, "
      f"{top1_accuracy(best, val_loader):.2f}% as pruned")
# The search scored each candidate after re-estimating its BatchNorm statistics; so does this:
adaptive_bn_calibration(best, calib_loader)
score = search["candidates"][search["ranking"][0]]["score"]
print(f"after adaptive BN: {top1_accuracy(best, val_loader):.2f}% (search score {score:.2f}); "
      "fine-tune it like the iterative model")"""),
]

OFA: list[Cell] = [
    ("md", """\
# Once-for-all: the bundled MobileNetV2 supernet

The trained supernet of the sample MobileNetV2 and its precomputed evolutionary search: every
evaluated subnet with the Pareto front, the Pareto set as a table, one entry extracted as a
plain model (checked equal to the dynamic supernet), its accuracy on the bundled data, then a
tiny new search of a few subnets."""),
    ("code", SETUP),
    ("code", """\
import torch

from uif_explorer.present import charts
from uif_explorer.data import torch_loader
from uif_explorer.torch import adaptive_bn_calibration, count_macs, top1_accuracy
from uif_explorer.torch.ofa import (
    ParetoSet,
    bundled_search,
    describe,
    load_bundled_supernet,
    set_subnet,
)

NAME = "mobilenetv2_small"
pruner, ofa_model = load_bundled_supernet(NAME)
describe(ofa_model)  # each channel group: its width candidates, or why it stays full"""),
    ("md", """\
## The precomputed search

Points are coloured by generation; the red step line is the Pareto front (non-dominated:
fewer MACs, better accuracy). The Pareto *set* is the guide's table: the best subnet of each
MACs bin."""),
    ("code", """\
evo = bundled_search(NAME)
pareto = ParetoSet.from_search(evo)
charts.evolution_figure(evo)"""),
    ("code", "pareto  # the notebook view of the Pareto set (still a dict: pareto['4.00'])"),
    ("md", """\
## One entry as a plain model

`get_static_subnet` builds the subnet from plain `Conv2d` / `BatchNorm2d` / `Linear` layers;
its outputs equal the dynamic supernet's with the same subnet active."""),
    ("code", """\
key = list(pareto)[len(pareto) // 2]  # a bin in the middle of the MACs range
entry = pareto[key]
static, config, macs, params = pruner.get_static_subnet(ofa_model, entry["subnet_setting"])
counted = count_macs(static, torch.zeros(1, 1, 28, 28)) / 1e6
print(f"bin {key}: {entry['net_id']}, {macs:.3f} M MACs, {params:.4f} M params "
      f"(FLOP counter on the static model: {counted:.3f} M)")

x = next(iter(torch_loader("test", limit=64, batch_size=64)))[0]
set_subnet(ofa_model, entry["subnet_setting"])
with torch.no_grad():
    dynamic_out, static_out = ofa_model.eval()(x), static.eval()(x)
set_subnet(ofa_model, [])  # back to the max subnet
rel = (torch.linalg.vector_norm(static_out - dynamic_out)
       / torch.linalg.vector_norm(dynamic_out)).item()
print(f"static vs dynamic relative error: {rel:.2e}")
assert rel <= 1e-5"""),
    ("code", """\
calib_loader = torch_loader("train", limit=8 * 64, batch_size=64, shuffle=False)
val_loader = torch_loader("test", limit=500, batch_size=250)
adaptive_bn_calibration(static, calib_loader)  # re-estimate BN statistics for this subnet
print(f"{entry['net_id']}: {top1_accuracy(static, val_loader):.2f}% on 500 test images "
      f"(the search recorded {entry['acc1']:.2f}%)")
charts.evolution_figure(evo, highlight=[entry["net_id"]])"""),
    ("md", """\
## A tiny new search

The guide's `run_evolutionary_search` with a very small budget (an initial population of 4,
one generation of 2 mutations and 1 crossover) on a narrow MACs range; its history goes to
`<workdir>/<name>_evolution.json`, and a rerun resumes from it."""),
    ("code", """\
calib_small = torch_loader("train", limit=2 * 64, batch_size=64, shuffle=False)
val_small = torch_loader("test", limit=200, batch_size=200)
small = pruner.run_evolutionary_search(
    ofa_model, adaptive_bn_calibration, (calib_small,), top1_accuracy, (val_small,),
    "acc1", "max", min_flops=3.0, max_flops=5.0, macs_step=0.5,
    parent_popu_size=4, iteration=1, mutate_size=2, crossover_size=1, workdir=WORKDIR)
print(f"{small.evaluations} subnets evaluated; history in {small.path}")
small"""),
    ("code", "charts.figure_of(small)"),
]

KERAS: list[Cell] = [
    ("md", """\
# Iterative pruning of the Keras sample convnet

The guide's TensorFlow workflow (`IterativePruningRunner`: `ana`, `prune`, `fit`,
`get_slim_model`) on the Keras MNIST-example convnet from the sample zoo, with the bundled
Fashion-MNIST subset. Nothing here imports torch (TensorFlow and the triton package do not mix
in one process; see `docs/keras.md`)."""),
    ("code", SETUP),
    ("code", """\
import keras
import numpy as np

from uif_explorer.present import charts
from uif_explorer.data import numpy_dataset
from uif_explorer.keras import IterativePruningRunner, count_macs, count_params, top1_accuracy
from uif_explorer.zoo import load_keras_sample

keras.utils.set_random_seed(0)
model = load_keras_sample("keras_convnet")
input_spec = (1, 28, 28, 1)  # or tf.TensorSpec((1, 28, 28, 1), tf.float32)
x_val, y_val = numpy_dataset("test", limit=200)
x_train, y_train = numpy_dataset("train", limit=1024)
print(f"unpruned top-1: {top1_accuracy(model, x_val, y_val):.2f}% on {len(x_val)} test images")"""),
    ("code", """\
runner = IterativePruningRunner(model, input_spec, workdir=WORKDIR)
runner"""),
    ("code", "runner.groups_frame()"),
    ("md", "## Sensitivity analysis (200 images, ratios 0.3 and 0.6)"),
    ("code", """\
sens = runner.ana(top1_accuracy, args=(x_val, y_val), ratios=(0.3, 0.6))
runner.sensitivity_frame()"""),
    ("code", "charts.sensitivity_figure(sens)"),
    ("md", "## Preview and prune 20% of the MACs"),
    ("code", """\
preview = runner.plan(0.2)
print(f"{preview.original_macs:.3f} M -> {preview.macs:.3f} M MACs "
      f"({preview.achieved_removal:.1%} removed), predicted score {preview.predicted_score:.1f}")
preview.groups"""),
    ("code", """\
sparse_model = runner.prune(ratio=0.2)
print(f"sparse model: {top1_accuracy(sparse_model, x_val, y_val):.2f}%")
sparse_model.compile(loss="sparse_categorical_crossentropy",
                     optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
sparse_model.fit(x_train, y_train, batch_size=128, epochs=1, verbose=0)  # 8 steps
print(f"after a few fit() steps: {top1_accuracy(sparse_model, x_val, y_val):.2f}%")"""),
    ("md", """\
## Saving the weights: the Keras 3 spelling

The guide (TensorFlow 2.4-2.12, Keras 2) saves with `save_weights("model_sparse_0.2",
save_format="tf")`. Keras 3 has no `save_format` (a `TypeError`) and wants weight files to end
in `.weights.h5`: write `save_weights("model_sparse_0.2.weights.h5")`. The sparse model's weights
load into the original model (`docs/migration.md`)."""),
    ("code", """\
try:
    sparse_model.save_weights(str(WORKDIR / "model_sparse_0.2"), save_format="tf")  # the guide
except TypeError as exc:
    print(f"the guide's line under Keras 3: TypeError: {exc}")
weights = WORKDIR / "model_sparse_0.2.weights.h5"
sparse_model.save_weights(weights)  # what to write instead
print("saved", weights.name)"""),
    ("md", """\
## The slim model

As in the guide: load the fine-tuned sparse weights into the original architecture, make a
runner on it and ask for the slim model (from `latest_spec`)."""),
    ("code", """\
tuned = load_keras_sample("keras_convnet")
tuned.load_weights(weights)
slim = IterativePruningRunner(tuned, input_spec, workdir=WORKDIR).get_slim_model()
diff = float(np.max(np.abs(slim.predict(x_val, verbose=0)
                           - sparse_model.predict(x_val, verbose=0))))
print(f"slim vs sparse: max |difference| {diff:.2e}")
assert diff < 1e-4
macs_before, macs_after = count_macs(model, input_spec), count_macs(slim, input_spec)
print(f"MACs {macs_before / 1e6:.3f} M -> {macs_after / 1e6:.3f} M,"
      f" params {count_params(model):,} -> {count_params(slim):,}, "
      f"top-1 {top1_accuracy(slim, x_val, y_val):.2f}%")"""),
    ("code", """\
# The slim model has no masks: save it whole as .keras (architecture and weights).
slim_path = WORKDIR / "model_slim.keras"
slim.save(slim_path)
reloaded = keras.saving.load_model(slim_path, safe_mode=True)
print(f"{slim_path.name} reloaded: top-1 {top1_accuracy(reloaded, x_val, y_val):.2f}%")"""),
    ("code", "charts.model_width_figure(model, slim)"),
    ("md", "## One-step search (4 candidates) on the same runner"),
    ("code", """\
search = runner.search(eval_fn=top1_accuracy, eval_args=(x_val, y_val), num_subnet=4, ratio=0.2)
charts.candidates_figure(search)"""),
    ("code", "runner.search_frame(0.2)"),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "pytorch_iterative_one_step.ipynb": PYTORCH,
    "ofa_mobilenetv2.ipynb": OFA,
    "keras_iterative.ipynb": KERAS,
}


def notebook(name: str, cells: list[Cell]) -> dict:
    """The notebook JSON (nbformat 4.5): no outputs, stable ids from the file name."""
    stem = Path(name).stem.replace("_", "-")
    out = []
    for i, (kind, source) in enumerate(cells):
        cell: dict = {"cell_type": "markdown" if kind == "md" else "code",
                      "id": f"{stem}-{i:02d}", "metadata": {},
                      "source": source.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                           "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(name: str) -> str:
    return json.dumps(notebook(name, NOTEBOOKS[name]), indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a notebook differs")
    args = ap.parse_args()
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale (run examples/make_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
