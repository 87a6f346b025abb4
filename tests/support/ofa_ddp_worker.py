"""Sandwich training of a tiny OFA model under DistributedDataParallel (gloo, CPU).

Launched by ``tests/torch/ofa/test_training.py`` as ``torchrun --standalone --nproc_per_node=2
ofa_ddp_worker.py OUT_DIR``. Each rank trains on its own random data and writes
``OUT_DIR/rank<r>.json``: the state-dict digest before and after training and the subnets it
activated, so the test can check that both ranks trained, stayed identical and drew the same
random subnets.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from topologies import build  # noqa: E402

from uif_explorer.torch.ofa import OFAPruner, train  # noqa: E402


def digest(model: torch.nn.Module, params_only: bool = False) -> str:
    h = hashlib.sha256()
    items = model.named_parameters() if params_only else model.state_dict().items()
    for k, v in items:
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, x = build("concat", seed=0)  # same weights on every rank
    ofa_model = OFAPruner(model, x[:1]).ofa_model([0.5, 0.75, 1], channel_divisible=4)
    space = ofa_model.ofa_space
    activated: list[list[int]] = []
    apply = space.apply

    def logged_apply(m, genome):
        activated.append([int(i) for i in genome])
        return apply(m, genome)

    space.apply = logged_apply
    before = digest(ofa_model)
    ddp = DistributedDataParallel(ofa_model)
    gen = torch.Generator().manual_seed(1000 + rank)  # different data on each rank
    data = TensorDataset(torch.randn(24, *x.shape[1:], generator=gen),
                         torch.randint(0, 5, (24,), generator=gen))
    table = train(ddp, model, DataLoader(data, batch_size=8), epochs=1, lr=0.05,
                  progress=lambda *_: None)
    result = {"rank": rank, "world": dist.get_world_size(), "before": before,
              "after": digest(ofa_model), "after_params": digest(ofa_model, True),
              "activated": activated,
              "steps": len(activated), "loss": float(table["loss"].iloc[-1]),
              "pid": os.getpid()}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
