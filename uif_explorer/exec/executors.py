"""Spread independent evaluations (sensitivity steps, search candidates) over workers.

An executor runs ``fn(context, item)`` for every item and yields ``(index, result)`` as each
finishes, so the caller can save progress after every result. ``context`` (the model, the
user's eval function and its data) is shipped to each worker once per run, not per item.

- ``InlineExecutor``: in this process, in order (the default).
- ``ProcessExecutor``: a local pool of spawned processes.
- ``RayExecutor``: Ray tasks, joining the cluster at ``RAY_ADDRESS`` or starting a local one.

Context and functions are serialised with cloudpickle (shipped with Ray), so functions defined
in a notebook or a test work too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

Job = Callable[[Any, Any], Any]


class Executor(Protocol):
    def run(self, fn: Job, context: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(context, items[index]))`` in completion order."""
        ...


class InlineExecutor:
    """Evaluate in this process, one item after another."""

    name = "inline"

    def run(self, fn: Job, context: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            yield i, fn(context, item)


def _dumps(obj: Any) -> bytes:
    from ray import cloudpickle

    return cloudpickle.dumps(obj)


def _loads(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)  # trusted: produced by this process a moment ago


_WORKER_STATE: dict[str, Any] = {}


def _pool_init(payload: bytes) -> None:
    _WORKER_STATE["fn"], _WORKER_STATE["context"] = _loads(payload)


def _pool_call(task: tuple[int, bytes]) -> tuple[int, bytes]:
    index, item = task
    result = _WORKER_STATE["fn"](_WORKER_STATE["context"], _loads(item))
    return index, _dumps(result)


class ProcessExecutor:
    """A pool of ``workers`` spawned processes on this machine."""

    name = "process"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, (os.cpu_count() or 2))

    def run(self, fn: Job, context: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if not items:
            return
        ctx = mp.get_context("spawn")
        payload = _dumps((fn, context))
        tasks = [(i, _dumps(item)) for i, item in enumerate(items)]
        with ctx.Pool(min(self.workers, len(items)), _pool_init, (payload,)) as pool:
            for index, result in pool.imap_unordered(_pool_call, tasks):
                yield index, _loads(result)


class RayExecutor:
    """Ray tasks: ``RAY_ADDRESS`` (or ``address``) joins a cluster, else a local instance.

    ``num_cpus`` sizes a local instance; ``num_gpus_per_task`` (e.g. 1 with ``gpus=[...]``)
    lets Ray place each evaluation on its own GPU.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 num_gpus_per_task: float = 0) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.num_gpus_per_task = num_gpus_per_task

    def _ensure(self) -> Any:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False,
                         ignore_reinit_error=True, log_to_driver=False)
        return ray

    def run(self, fn: Job, context: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if not items:
            return
        ray = self._ensure()

        @ray.remote(num_gpus=self.num_gpus_per_task, max_retries=0)
        def task(payload: bytes, index: int, item: bytes) -> tuple[int, bytes]:
            f, c = _loads(payload)
            return index, _dumps(f(c, _loads(item)))

        payload_ref = ray.put(_dumps((fn, context)))
        pending = [task.remote(payload_ref, i, _dumps(item)) for i, item in enumerate(items)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            index, result = ray.get(done[0])
            yield index, _loads(result)


def get_executor(spec: Executor | str | None = None, workers: int | None = None,
                 gpus: Sequence[str | int] | None = None) -> Executor:
    """``None``/'inline', 'process', 'ray', or an object with a ``run`` method."""
    if spec is None or spec == "inline":
        return InlineExecutor()
    if spec == "process":
        return ProcessExecutor(workers)
    if spec == "ray":
        return RayExecutor(num_cpus=workers, num_gpus_per_task=1 if gpus else 0)
    if hasattr(spec, "run"):
        return spec  # type: ignore[return-value]
    raise ValueError(
        f"Expected executor None, 'inline', 'process', 'ray' or an Executor. Received: {spec!r}"
    )
