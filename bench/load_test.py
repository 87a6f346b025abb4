"""Bounded localhost load test: several browser sessions run analyses at once on one server.

Starts the app with ``./run.sh`` on a free port (workspaces in a temporary folder), or uses
``--url`` (then ``--workspaces`` must be that server's ``UIF_WORKSPACES``). Headless Chromium
(Playwright) opens N independent sessions (browser contexts); each opens the Sensitivity page of
the sample ResNet-20 and presses **Run analysis** with the quick preset (200 images, ratios
0.3/0.6). Meanwhile a thread asks ``/_stcore/health`` every 100 ms, and a fresh session loads
the Model page to show that running jobs do not block other pages. At the end every session's
``.sens`` must exist in its own workspace, be complete, hold the sample's channel groups, and
equal the others and an analysis run here in-process (same data, same numbers).

    nice .venv/bin/python bench/load_test.py                 # 4 sessions
    nice .venv/bin/python bench/load_test.py --sessions 6 --json out.json

Prints a table: sessions, jobs finished, worst / median / p95 health latency, failures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "tests" / "support"))
import apprun  # noqa: E402
from apprun import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from apprun import stop as stop_server  # noqa: E402

MODEL = "resnet20"
QUICK_IMAGES, QUICK_RATIOS = 200, (0.3, 0.6)
FINISHED = re.compile(r"evaluations saved \(finished\)")


def health(url: str, timeout: float = 5.0) -> tuple[str, float]:
    """(body or error, seconds) of one ``/_stcore/health`` request."""
    start = time.perf_counter()
    body = apprun.health(url, timeout)
    return body, time.perf_counter() - start


class HealthPoller(threading.Thread):
    """Asks the health endpoint every ``period`` seconds until stopped; keeps every latency."""

    def __init__(self, url: str, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.period = url, period
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            body, seconds = health(self.url)
            self.latencies.append(seconds)
            if body != "ok":
                self.failures.append(body)
            self._stop_event.wait(max(0.0, self.period - seconds))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def start_server(workspaces: Path, log: Path,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    proc, url = apprun.start(log, {"UIF_WORKSPACES": str(workspaces), **(extra_env or {})})
    if apprun.wait_ready(proc, url) is not None:
        stop_server(proc)
        sys.exit(f"the app did not start; see {log}")
    return proc, url


def token_of(page) -> str:
    page.wait_for_url("**ws=*", timeout=120_000)
    return parse_qs(urlparse(page.url).query)["ws"][0]


def reference() -> dict:
    """The same analysis in this process: what every session must have found."""
    import torch  # noqa: F401 - before anything that may import TensorFlow

    from uif_explorer import zoo
    from uif_explorer.services import eval_data
    from uif_explorer.torch.evaluation import top1_accuracy
    from uif_explorer.torch.runners import get_pruning_runner

    with tempfile.TemporaryDirectory() as tmp:
        runner = get_pruning_runner(zoo.load_torch_sample(MODEL), zoo.example_input(MODEL),
                                    "iterative", workdir=tmp, name=MODEL)
        return runner.ana(top1_accuracy, args=(eval_data.test_loader(QUICK_IMAGES),),
                          ratios=QUICK_RATIOS)


def essence(sens: dict) -> dict:
    """What must agree between sessions: groups, ratios, baseline and every curve point."""
    return {"ratios": sens["ratios"], "baseline": sens["baseline"],
            "groups": [(g["id"], g["name"], g["num_channels"], g["prunable"],
                        [tuple(p) for p in g["curve"]]) for g in sens["groups"]]}


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import expect, sync_playwright

    load_before = os.getloadavg()
    own_server = args.url is None
    tmp = tempfile.TemporaryDirectory(prefix="uif-load-")
    workspaces = Path(args.workspaces or tmp.name)
    log = Path(tmp.name) / "server.log"
    proc = None
    if own_server:
        proc, url = start_server(workspaces, log, dict(e.split("=", 1) for e in args.env))
    else:
        url = args.url.rstrip("/")
    poller = HealthPoller(url)
    failures: list[str] = []
    tokens: list[str] = []
    t0 = time.perf_counter()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            contexts = [browser.new_context() for _ in range(args.sessions)]
            pages = [c.new_page() for c in contexts]
            # warm the server's model cache once, then start the jobs
            pages[0].goto(f"{url}/sensitivity", timeout=180_000)
            expect(pages[0].get_by_role("button", name="Run analysis")).to_be_enabled(
                timeout=180_000)
            poller.start()
            for i, page in enumerate(pages):
                if i:
                    page.goto(f"{url}/sensitivity", timeout=180_000)
                run_button = page.get_by_role("button", name="Run analysis")
                expect(run_button).to_be_enabled(timeout=180_000)
                tokens.append(token_of(page))
                run_button.click()
            started = time.perf_counter()
            if args.detach:  # jobs keep running in the server; no page polls them
                for c in contexts:
                    c.close()
                pages = []
            # another session's page while the jobs run
            other = browser.new_context().new_page()
            t_page = time.perf_counter()
            other.goto(url, wait_until="commit", timeout=180_000)
            expect(other.get_by_role("heading", name="ResNet-20")).to_be_visible(
                timeout=180_000)
            other_page_s = time.perf_counter() - t_page
            # wait for every analysis to be complete on disk
            paths = [workspaces / t / f"{MODEL}.sens" for t in tokens]
            done: dict[int, float] = {}
            deadline = time.monotonic() + args.timeout
            while len(done) < len(paths) and time.monotonic() < deadline:
                for i, p in enumerate(paths):
                    if i in done or not p.exists():
                        continue
                    try:
                        if json.loads(p.read_text()).get("complete"):
                            done[i] = time.perf_counter() - started
                    except ValueError:
                        failures.append(f"session {i}: half-written .sens")
                time.sleep(0.25)
            for page in pages:  # each page shows its finished analysis, no error
                expect(page.get_by_text(FINISHED).first).to_be_visible(timeout=120_000)
                if page.get_by_test_id("stException").count():
                    failures.append("a page shows a traceback")
            browser.close()
    finally:
        poller.stop()
        if proc is not None:
            stop_server(proc)
    wall = time.perf_counter() - t0
    if len(set(tokens)) != len(tokens):
        failures.append(f"sessions shared a workspace token: {tokens}")
    sens = []
    for i, t in enumerate(tokens):
        p = workspaces / t / f"{MODEL}.sens"
        if not p.exists():
            failures.append(f"session {i}: no {p}")
            continue
        data = json.loads(p.read_text())
        if not data.get("complete"):
            failures.append(f"session {i}: analysis not finished")
        sens.append(essence(data))
        others = [q for q in workspaces.iterdir() if q.name != t and q.is_dir()]
        if any((q / f"{MODEL}.sens").resolve() == p.resolve() for q in others):
            failures.append(f"session {i}: its file is shared")
    want = essence(reference())
    for i, s in enumerate(sens):
        if s != want:
            failures.append(f"session {i}: results differ from the in-process analysis")
    failures += [f"health: {f}" for f in poller.failures]
    lat = sorted(poller.latencies) or [float("nan")]
    result = {
        "sessions": args.sessions, "jobs_finished": len(done), "jobs": len(tokens),
        "health_requests": len(poller.latencies), "health_worst_s": round(lat[-1], 3),
        "health_median_s": round(statistics.median(lat), 4),
        "health_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
        "job_seconds_max": round(max(done.values()), 1) if done else None,
        "other_page_load_s": round(other_page_s, 2), "wall_s": round(wall, 1),
        "groups": len(want["groups"]), "failures": len(failures), "failure_details": failures,
        "cpus": os.cpu_count(), "server_env": args.env, "detach": args.detach,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }
    tmp.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--url", help="use a running app instead of starting ./run.sh")
    parser.add_argument("--workspaces", help="UIF_WORKSPACES of the app given by --url")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for all jobs")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--detach", action="store_true",
                        help="close the sessions' pages once their jobs started (measures the "
                        "jobs alone, without the pages' 0.5 s progress reruns)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the started server (e.g. OMP_NUM_THREADS=1)")
    args = parser.parse_args()
    if args.url and not args.workspaces:
        parser.error("--url needs --workspaces (the server's UIF_WORKSPACES folder)")
    if not 1 <= args.sessions <= 32:
        parser.error("--sessions must be between 1 and 32 (a bounded load test)")
    result = run(args)
    rows = [("sessions", result["sessions"]),
            ("jobs finished", f"{result['jobs_finished']} / {result['jobs']}"),
            ("health requests", result["health_requests"]),
            ("health worst (s)", result["health_worst_s"]),
            ("health median (s)", result["health_median_s"]),
            ("health p95 (s)", result["health_p95_s"]),
            ("slowest job (s)", result["job_seconds_max"]),
            ("other page load during jobs (s)", result["other_page_load_s"]),
            ("wall (s)", result["wall_s"]),
            ("load average before / after", " / ".join(
                f"{result[k][0]:.1f}" for k in ("load_average_before", "load_average_after"))),
            ("failures", result["failures"])]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure':{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:{width}} | {v} |")
    for f in result["failure_details"]:
        print("FAILURE:", f)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    sys.exit(1 if result["failures"] or result["health_worst_s"] >= 1.0 else 0)


if __name__ == "__main__":
    main()
