"""Errors of the CLI speak the CLI: a message names the command to type, never the API call.

The engine's messages say what to call from Python (``run runner.ana(eval_fn, ...) first``,
``pass forced=True``); :func:`translate` rewrites those hints into the ``uif-explorer``
command and flags the person would type, keeping the engine's explanation.
"""

from __future__ import annotations

import argparse
import re
import shlex


class CliError(Exception):
    """A problem with what was typed, already phrased for the command line."""


MODEL_FLAGS = (("model", "--model"), ("weights", "--weights"), ("num_classes", "--num-classes"),
               ("input_shape", "--input-shape"), ("workdir", "--workdir"), ("name", "--name"))
DEFAULTS = {"model": None, "workdir": ".vai"}


def command(args: argparse.Namespace, sub: str, *extra: str) -> str:
    """The ``uif-explorer <sub>`` command for the model the person named (same model flags,
    defaults left out), e.g. ``uif-explorer ana --model resnet20``."""
    parts = ["uif-explorer", sub]
    for attr, flag in MODEL_FLAGS:
        value = getattr(args, attr, None)
        if value is None or value == DEFAULTS.get(attr, object()):
            continue
        if attr == "input_shape":
            value = ",".join(str(int(d)) for d in value)
        parts += [flag, str(value)]
    for ex in getattr(args, "exclude", None) or []:
        parts += ["--exclude", ex]
    return shlex.join(parts + list(extra))


_CALL = r"runner\.{name}\((?:[^()]|\([^()]*\))*\)"


def translate(exc: BaseException, args: argparse.Namespace) -> str:
    """The engine's message with its API hints replaced by the CLI's commands and flags."""
    text = str(exc).strip() or type(exc).__name__
    ratio = getattr(args, "ratio", None)
    search = command(args, "search", *(["--ratio", str(ratio)] if ratio is not None else []))
    text = re.sub(_CALL.format(name="ana"), f"`{command(args, 'ana')}`", text)
    text = re.sub(_CALL.format(name="search"), f"`{search}`", text)
    text = re.sub(r"\brun ana again\b", f"run `{command(args, 'ana', '--forced')}`", text)
    text = re.sub(r"\bforced=True\b", "--forced", text)
    text = re.sub(r"\bchannel_divisible=(\d+)", r"--divisible \1", text)
    text = re.sub(r"\b(?:removal_ratio|ratio)=([0-9.]+)", r"--ratio \1", text)
    text = text.replace("See groups_table() for every group.",
                        f"`{command(args, 'inspect')}` lists every group.")
    return " ".join(text.split())  # one line: the engine's message may wrap
