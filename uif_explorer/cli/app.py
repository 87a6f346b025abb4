"""``uif-explorer app``: start the web app (the same as ``./run.sh``)."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HELP = "start the web app (same as ./run.sh)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--trust-pickle", action="store_true",
                   help="accept whole pickled nn.Module uploads (runs their code; see "
                   "docs/security.md)")


def check(args: argparse.Namespace) -> None:
    from uif_explorer.cli.errors import CliError

    if not 0 < args.port < 65536:
        raise CliError(f"Expected --port between 1 and 65535. Received: --port {args.port}")


def run(args: argparse.Namespace) -> int:
    env = {**os.environ, "UIF_PORT": str(args.port)}
    extra = ["--trust-pickle"] if args.trust_pickle else []
    return subprocess.call([str(REPO_ROOT / "run.sh"), *extra], env=env)
