"""How a runner reads in a notebook or a REPL: tables, reprs and a progress bar.

:class:`RunnerViews` is a part of :class:`~uif_explorer.core.runner_files.RunnerFiles`; the
tables and texts themselves are built in :mod:`uif_explorer.present.reports`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pandas as pd

from uif_explorer.core.allocation import check_removal_ratio
from uif_explorer.core.pruner import BasePruner
from uif_explorer.core.search_files import SEARCH_KIND
from uif_explorer.io.workspace import Workspace, WorkspaceError, read_json

Progress = Callable[[int, int, dict], None]


class RunnerViews:
    """Tables of the groups, the analysis and a search; the runner's text and HTML repr."""

    pruner: BasePruner
    name: str
    workspace: Workspace
    sensitivity: Callable[..., dict[str, Any]]

    @property
    def groups(self) -> pd.DataFrame:
        """The channel groups (prunable or not, and why)."""
        return self.pruner.groups_table()

    def groups_frame(self) -> pd.DataFrame:
        """The channel groups: id, first layer, channels, prunable, layers, why excluded."""
        return self.pruner.groups_table()

    def sensitivity_frame(self) -> pd.DataFrame:
        """The finished analysis as a table: score per group and ratio, worst drop."""
        from uif_explorer.present.reports import sensitivity_frame

        return sensitivity_frame(self.sensitivity(quiet=True))

    def search_frame(self, removal_ratio: float | None = None,
                     group_ratios: bool = False) -> pd.DataFrame:
        """The one-step candidates at ``removal_ratio`` (default: the newest search file of
        this model) as a table: MACs, params, MACs removed, score and rank."""
        from uif_explorer.present.reports import search_frame

        if removal_ratio is None:
            found = sorted(self.workspace.root.glob(f"{self.name}_ratio_*.search"),
                           key=lambda p: p.stat().st_mtime)
            if not found:
                raise WorkspaceError(f"No search of {self.name} in {self.workspace.root}: run "
                                     "runner.search(...) first.")
            path = found[-1]
        else:
            path = self.workspace.search(self.name, check_removal_ratio(removal_ratio))
            if not path.exists():
                raise WorkspaceError(f"No search at {path}: run runner.search(...) at "
                                     f"{removal_ratio} first.")
        return search_frame(read_json(path, kind=SEARCH_KIND), group_ratios)

    def __repr__(self) -> str:
        from uif_explorer.present.reports import runner_text

        try:
            return runner_text(self)
        except Exception:  # a half-built runner (e.g. in a traceback) still has a repr
            return object.__repr__(self)

    def _repr_html_(self) -> str:
        from uif_explorer.present.reports import runner_html

        return runner_html(self)

    def _progress(self, total: int, progress: Progress | None):
        bar = None
        if progress is None and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, desc=self.name, unit="eval")

        def step(done: int, info: dict) -> None:
            if progress is not None:
                progress(done, total, info)
            if bar is not None:
                bar.update(1)

        return step, bar

