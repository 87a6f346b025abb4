"""The jobs' device (torch/device.py): resolved from auto/cpu/cuda, refused clearly when CUDA
is asked for and absent; jobs move private copies only. CUDA runs are marked ``gpu``."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from uif_explorer.torch import device as dev
from uif_explorer.torch.evaluation import model_device, top1_accuracy
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.zoo import load_torch_sample


@pytest.fixture(autouse=True)
def _no_choice_left_behind():
    yield
    dev.set_job_device(None)


def test_auto_and_cpu_resolve_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dev.resolve_device("auto").type == expected
    assert dev.resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"Expected a device in \('auto', 'cpu', 'cuda'\)"):
        dev.resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_a_gpu_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="PyTorch sees none.*Choose 'auto' or 'cpu'"):
        dev.set_job_device("cuda")
    assert dev.job_device() is None  # a refused choice changes nothing


def test_no_choice_leaves_models_where_they_are():
    model = torch.nn.Linear(2, 2)
    assert dev.job_device() is None and dev.to_job_device(model) is model
    dev.set_job_device("cpu")
    assert dev.to_job_device(torch.zeros(1)).device.type == "cpu"
    assert dev.describe().startswith("CPU (")


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))),
                      batch_size=8)


@pytest.mark.gpu
def test_analysis_runs_on_cuda_and_leaves_the_model_on_the_cpu(tmp_path):
    dev.set_job_device("cuda")
    model = load_torch_sample("resnet20")
    runner = get_pruning_runner(model, (1, 1, 28, 28), workdir=tmp_path)
    seen = []
    runner.ana(lambda m, loader: seen.append(model_device(m).type) or top1_accuracy(m, loader),
               args=(_loader(),), ratios=(0.5,), reuse_activations=False)
    assert set(seen) == {"cuda"} and model_device(model).type == "cpu"


@pytest.mark.gpu
def test_reuse_scores_on_cuda_match_full_evaluation(tmp_path):
    dev.set_job_device("cuda")
    model = load_torch_sample("resnet20")
    sens = {}
    for reuse in (True, False):
        runner = get_pruning_runner(model, (1, 1, 28, 28), workdir=tmp_path / str(reuse))
        sens[reuse] = runner.ana(top1_accuracy, args=(_loader(),), ratios=(0.5,),
                                 reuse_activations=reuse)
    assert [g["curve"] for g in sens[True]["groups"]] == \
        [g["curve"] for g in sens[False]["groups"]]
