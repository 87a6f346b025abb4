"""Refining a one-step search from the app or the CLI, without streamlit.

The adaptive-BN score ranks candidates almost at chance against their accuracy after
fine-tuning (docs/benchmarks.md), so the One-step page can refine its top candidates: the
engine's successive halving (:mod:`uif_explorer.core.refinement`) fine-tunes the best ``keep``
for ``steps`` batches of the bundled training images, re-scores them with the search's own
protocol, keeps the better half with twice the budget, and so on. This module makes the
background job that runs the search and then its refinement, reads the stages back from the
``.search`` file (where the engine saves them after every candidate, so an interrupted run
resumes), and says which candidate ``prune(index=None)`` builds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from uif_explorer.core.refinement import Refinement, refine_after_search
from uif_explorer.core.scores import ScoreJob

BATCH_SIZE = 64  # fine-tuning batches of 64 bundled training images (PyTorch and Keras)
DEFAULT_KEEP = 4
DEFAULT_STEPS = 20


@dataclass(frozen=True)
class RefineChoice:
    """What the page asks: how many candidates start, fine-tuning batches of the first stage."""

    keep: int = DEFAULT_KEEP
    steps: int = DEFAULT_STEPS

    def __post_init__(self) -> None:
        Refinement(keep=self.keep, steps=self.steps)  # the engine's checks and messages

    def stages(self, candidates: int) -> list[tuple[int, int]]:
        """(candidates fine-tuned, batches) per stage for a search of ``candidates``."""
        return Refinement(keep=self.keep, steps=self.steps).stages(candidates)

    def fine_tunes(self, candidates: int) -> int:
        """Fine-tuning runs in all (each is followed by one scoring)."""
        return sum(n for n, _ in self.stages(candidates))


def make_refinement(framework: str, choice: RefineChoice) -> Refinement:
    """The engine's :class:`Refinement` with the backend's built-in ``fine_tune`` on the first
    bundled training images (as many as the largest stage budget uses), in a fixed order so
    that the candidates of a stage are trained on the same batches."""
    from uif_explorer import data

    budget = choice.stages(choice.keep)[-1][1]
    if framework == "torch":  # unshuffled: every candidate (and a resumed run) sees the same
        args: tuple = (data.torch_loader("train", batch_size=BATCH_SIZE, shuffle=False,
                                         limit=budget * BATCH_SIZE),)
    elif framework == "keras":
        args = data.numpy_dataset("train", limit=budget * BATCH_SIZE)
    else:
        raise ValueError("Expected a framework 'torch' or 'keras' to refine with. "
                         f"Received: framework={framework!r}")
    return Refinement(finetune_args=args, steps=choice.steps, keep=choice.keep)


def search_job(runner: Any, source: Any, ev: Any, num_subnet: int, ratio: float, forced: bool,
               choice: RefineChoice | None, target: str = "macs"
               ) -> Callable[[Any], dict[str, Any]]:
    """``work(job)`` for the job registry: the search (resumed when saved), then, with a
    ``choice``, its refinement (resumed from the stages saved in the ``.search`` file).
    Progress and cancel go through ``job.progress``; the result is the search's dict.
    ``target='latency'``: ``ratio`` of the predicted latency (the first such search
    measures this machine's latency table, saved in the workspace)."""
    refinement = make_refinement(source.framework, choice) if choice is not None else None

    def work(job: Any) -> dict[str, Any]:
        data = source.backend.search(runner, ev, num_subnet, ratio, forced, job.progress,
                                     target=target)
        if refinement is None:
            return data
        return refine(runner, ev, data, refinement, job.progress)

    return work


def refine(runner: Any, ev: Any, data: dict[str, Any], refinement: Refinement,
           progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Refine a finished search ``data`` (the ``.search`` dict) with the search's own protocol:
    the page's job and ``uif-explorer search --refine`` both come here."""
    score = ScoreJob.of(ev.eval_fn, ev.eval_args, ev.calib_fn, ev.calib_args,
                        args_name="eval_args", mode="slim")  # the search's protocol
    return refine_after_search(runner, data, score, refinement, None, progress)


# -- reading the stages back -------------------------------------------------------------------
@dataclass(frozen=True)
class RefinementView:
    """The refinement saved in a ``.search`` file, as the page shows it."""

    choice: RefineChoice | None  # None: made outside the app with settings it cannot redo
    budgets: list[int]
    stages: list[dict[str, Any]]
    winner: int | None
    complete: bool
    done: int  # fine-tunes scored so far
    total: int  # fine-tunes in all

    @property
    def interrupted(self) -> bool:
        return not self.complete


def refinement_view(search: Mapping[str, Any] | None) -> RefinementView | None:
    """The saved refinement of ``search``, or None when it was never refined."""
    state = (search or {}).get("refinement")
    if not state:
        return None
    settings = state.get("settings") or {}
    try:
        choice: RefineChoice | None = RefineChoice(int(settings["keep"]), int(settings["steps"]))
    except (KeyError, TypeError, ValueError):
        choice = None
    if not str(settings.get("finetune", "")).endswith(" fine_tune"):
        choice = None  # the user's own finetune_fn: the app cannot run it again
    ranking = search.get("ranking") or []
    sizes = (choice.stages(len(ranking) or len(search.get("candidates", [])))
             if choice is not None else [(len(s["candidates"]), s["budget"])
                                         for s in state.get("stages", [])])
    stages = list(state.get("stages", []))
    return RefinementView(
        choice=choice, budgets=list(settings.get("budgets") or [b for _, b in sizes]),
        stages=stages, winner=state.get("winner") if state.get("complete") else None,
        complete=bool(state.get("complete")),
        done=sum(len(s.get("scores", {})) for s in stages), total=sum(n for n, _ in sizes))


def went_on(view: RefinementView) -> list[list[int]]:
    """Per stage, the candidates that reached the next one (the last stage: the winner)."""
    out = []
    for k, stage in enumerate(view.stages):
        if k + 1 < len(view.stages):
            out.append(list(view.stages[k + 1]["candidates"]))
        else:
            out.append([view.winner] if view.winner is not None else [])
    return out


def stage_lines(view: RefinementView) -> list[str]:
    """One sentence per stage: who was fine-tuned for how long, who went on."""
    lines = []
    for stage, on in zip(view.stages, went_on(view), strict=True):
        ids = ", ".join(str(c) for c in stage["candidates"])
        scored = len(stage.get("scores", {}))
        head = (f"Stage {stage['stage']} ({stage['budget']} fine-tuning batches): candidates "
                f"{ids}")
        if scored < len(stage["candidates"]):
            lines.append(f"{head}; {scored} of {len(stage['candidates'])} scored so far.")
        elif on and view.winner is not None and on == [view.winner]:
            lines.append(f"{head}; the best after fine-tuning: candidate {view.winner}.")
        else:
            lines.append(f"{head}; went on: {', '.join(str(c) for c in on) or 'none yet'}.")
    return lines


def winner_text(view: RefinementView) -> str:
    """What ``prune(index=None)`` builds now, in words."""
    if view.winner is not None:
        return (f"Refinement chose candidate {view.winner}: `prune(index=None)` and "
                "**Build the refined winner** build it (from the original weights, "
                "not fine-tuned).")
    return ("Refinement is not finished: `prune(index=None)` builds the best candidate by "
            "adaptive-BN score until it is.")
