"""``uif-explorer`` (also ``python -m uif_explorer``): the API's workflow from a terminal.

Every subcommand works on the same workspace files as the API and the app, through the same
service layer (``uif_explorer.services``), so an analysis run here (on a GPU box, or with
``--executor ray`` on a cluster) can be opened in the app later. One module per subcommand;
each checks its arguments before loading anything, and errors name the command to type.

    uif-explorer inspect --model resnet20
    uif-explorer ana     --model resnet20 --data bundled --limit 500
    uif-explorer prune   --model resnet20 --ratio 0.4 --mode slim --out slim.safetensors
    uif-explorer finetune --model resnet20 --spec .vai/resnet20_ratio_0.4.spec --data imgs/
    uif-explorer search  --model resnet20 --ratio 0.5 --num-subnet 50 --executor process
    uif-explorer export  --model resnet20 --spec .vai/resnet20_ratio_0.4.spec --format onnx
    uif-explorer ofa-train  --model mobilenetv2_small --expand-ratio 0.5 0.75 1 --epochs 1
    uif-explorer ofa-search --supernet mobilenetv2_small --min-macs 3 --max-macs 5
    uif-explorer app     --port 8501
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from uif_explorer.cli import (
    ana,
    app,
    export,
    finetune,
    inspect,
    ofa_search,
    ofa_train,
    prune,
    search,
)
from uif_explorer.cli.errors import CliError, translate

COMMANDS: tuple[ModuleType, ...] = (inspect, ana, prune, finetune, search, export, ofa_train,
                                    ofa_search, app)


def _name(module: ModuleType) -> str:
    return getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="uif-explorer", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        p = sub.add_parser(_name(module), help=module.HELP)
        module.add_arguments(p)
        p.set_defaults(module=module)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a problem is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    from uif_explorer.core.plan import PlanError
    from uif_explorer.core.scores import AnalysisError
    from uif_explorer.io.loading import LoadError
    from uif_explorer.io.workspace import WorkspaceError

    try:
        args.module.check(args)
        return int(args.module.run(args) or 0)
    except CliError as exc:
        message = str(exc)
    except (LoadError, PlanError, WorkspaceError, AnalysisError, ValueError, TypeError) as exc:
        message = translate(exc, args)
    print(f"uif-explorer {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
