"""How long the app takes to be usable: time to ready after ``./run.sh`` and page-switch time.

Goals (issue): time to ready on a warm setup < 10 s, page switch < 1 s.

**Time to ready** (``--runs`` times, the server killed between runs): ``./run.sh`` is started on
a free port (``UIF_PORT``) with the virtualenv already set up (``scripts/setup_env.sh`` skips
pip by its hash stamp) and a fresh workspaces folder; measured from the start of ``./run.sh``:
(a) seconds until ``/_stcore/health`` answers ``ok``, (b) seconds until the Model page, opened in
headless Chromium as soon as (a) holds, shows the sample model's "Parameters" metric (its first
render). Chromium is launched once, before any server, so its start-up is not counted.

**Page switch** (one browser session on the last run's server): click each sidebar link
(Sensitivity, One-step, OFA Pareto, Export, Model) in a cycle ``--cycles`` times; each click is
timed until the page's heading is visible and the script run is over (``stApp``'s
``data-test-script-state`` is ``notRunning``, no ``stStatusWidget``, no ``stSpinner``). The
first visit of each page (cold caches: the page's imports and cached resources) is reported
apart from later visits. The Model page was already rendered once (the time-to-ready load).

**Where the time goes**: the first render is split into the browser's page load (HTML + JS),
the Model title (the script reached the page: app.py and the page's imports, torch included),
the metrics (model loaded, params/MACs counted) and the end of the run (channel groups). Then
the same first render and page cycle run through Streamlit's AppTest in this process (script
runs only: no browser, no websocket), so the app's own cost reads apart from the browser's.

    nice .venv/bin/python bench/app_timing.py                  # 3 runs, 3 cycles
    nice .venv/bin/python bench/app_timing.py --runs 5 --cycles 5

Prints a Markdown table (median, max, goal, pass when the median meets the goal) with the
command and the machine's load average, and writes ``bench/results/app_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "app_timing.json"
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "tests" / "support"))
import apprun  # noqa: E402
from apprun import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from apprun import stop as stop_server  # noqa: E402

PAGES = ("Sensitivity", "One-step", "OFA Pareto", "Export", "Model")
READY_GOAL_S, SWITCH_GOAL_S = 10.0, 1.0
TIMEOUT_S = 180.0


def healthy(url: str) -> bool:
    return apprun.health(url, timeout=2) == "ok"


def start_server(workspaces: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    """``./run.sh`` on a free port; (process, url, perf_counter at start)."""
    start = time.perf_counter()
    proc, url = apprun.start(log, {"UIF_WORKSPACES": str(workspaces)})
    return proc, url, start


def wait_idle(page: Any, timeout_ms: float) -> None:
    """Until the script run is over: no running state, no status widget, no spinner."""
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && !document.querySelector('[data-testid="stStatusWidget"]')
                && !document.querySelector('[data-testid="stSpinner"]');
        }""", timeout=timeout_ms, polling=50)


def time_to_ready(browser: Any, runs: int, tmp: Path) -> tuple[list[dict[str, float]], Any]:
    """``runs`` cold server starts; the last server and its page are kept for page switching."""
    from playwright.sync_api import expect

    out: list[dict[str, float]] = []
    kept = None
    for i in range(runs):
        proc, url, start = start_server(tmp / f"ws{i}", tmp / f"server{i}.log")
        context = page = None
        try:
            while not healthy(url):
                if proc.poll() is not None or time.perf_counter() - start > TIMEOUT_S:
                    sys.exit(f"the app did not start; see {tmp / f'server{i}.log'}:\n"
                             + (tmp / f"server{i}.log").read_text()[-3000:])
                time.sleep(0.05)
            t_health = time.perf_counter() - start
            context = browser.new_context(viewport={"width": 1440, "height": 1100})
            page = context.new_page()
            page.goto(url)  # returns at the HTML page's load event (JS bundle loaded)
            t_loaded = time.perf_counter() - start
            title = page.get_by_test_id("stMainBlockContainer").get_by_role(
                "heading", name="Model", exact=True, level=1)
            expect(title).to_be_visible(timeout=TIMEOUT_S * 1000)  # the script reached the page
            t_title = time.perf_counter() - start
            metric = page.get_by_test_id("stMetric").filter(has_text="Parameters")
            expect(metric).to_be_visible(timeout=TIMEOUT_S * 1000)
            t_model = time.perf_counter() - start
            wait_idle(page, TIMEOUT_S * 1000)
            t_idle = time.perf_counter() - start
            out.append({"health_s": t_health, "page_loaded_s": t_loaded, "title_s": t_title,
                        "model_metrics_s": t_model, "model_done_s": t_idle})
            print(f"run {i + 1}: health {t_health:.2f} s, page loaded {t_loaded:.2f} s, "
                  f"Model title {t_title:.2f} s, Model metrics {t_model:.2f} s, "
                  f"Model run done {t_idle:.2f} s", flush=True)
        finally:
            if i == runs - 1 and page is not None:
                kept = (proc, context, page)
            else:
                if context is not None:
                    context.close()
                stop_server(proc)
    return out, kept


def page_switch(page: Any, cycles: int) -> list[dict[str, Any]]:
    """Click every sidebar page ``cycles`` times; seconds from click to the page done."""
    from playwright.sync_api import expect

    nav = page.get_by_test_id("stSidebarNav")
    main = page.get_by_test_id("stMainBlockContainer")
    visits: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cycle in range(cycles):
        for title in PAGES:
            link = nav.get_by_role("link", name=title)
            heading = main.get_by_role("heading", name=title, exact=True, level=1)
            start = time.perf_counter()
            link.click()
            expect(heading).to_be_visible(timeout=TIMEOUT_S * 1000)
            t_heading = time.perf_counter() - start
            wait_idle(page, TIMEOUT_S * 1000)
            seconds = time.perf_counter() - start
            first = title not in seen
            seen.add(title)
            visits.append({"page": title, "cycle": cycle, "first": first,
                           "heading_s": t_heading, "done_s": seconds})
            print(f"cycle {cycle + 1} {title:<12} heading {t_heading:.2f} s, done "
                  f"{seconds:.2f} s{' (first visit)' if first else ''}", flush=True)
    return visits


def script_times(cycles: int, workspaces: Path) -> dict[str, list[float]]:
    """The same first render and page cycle through Streamlit's AppTest in this process: the
    server-side script runs alone (no browser, no websocket), to tell the app's own cost from
    the browser's and the machine's."""
    os.environ["UIF_WORKSPACES"] = str(workspaces)
    from streamlit.testing.v1 import AppTest

    files = {"Sensitivity": "pages/sensitivity.py", "One-step": "pages/one_step.py",
             "OFA Pareto": "pages/ofa.py", "Export": "pages/export.py",
             "Model": "pages/model.py"}
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT_S)
    at.query_params["ws"] = "app-timing-" + "f" * 21
    start = time.perf_counter()
    at.run()
    out: dict[str, list[float]] = {"Model (first render, new process)":
                                   [time.perf_counter() - start]}
    for cycle in range(cycles):
        for title in PAGES:
            at.switch_page(files[title])
            start = time.perf_counter()
            at.run()
            key = f"{title}, {'first visit' if cycle == 0 else 'later visits'}"
            out.setdefault(key, []).append(time.perf_counter() - start)
    if at.exception:
        print(f"AppTest raised: {[e.value for e in at.exception]}", flush=True)
    return out


def row(label: str, values: list[float], goal: float | None) -> dict[str, Any]:
    """One table row; ``goal`` None for a part of a measurement (no pass/fail of its own)."""
    med = statistics.median(values)
    return {"what": label, "n": len(values), "median_s": round(med, 3),
            "max_s": round(max(values), 3), "goal_s": goal,
            "pass": None if goal is None else med < goal}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| measurement | n | median (s) | max (s) | goal (s) | median meets goal |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        goal = "" if r["goal_s"] is None else f"< {r['goal_s']:g}"
        verdict = "" if r["pass"] is None else "pass" if r["pass"] else "FAIL"
        lines.append(f"| {r['what']} | {r['n']} | {r['median_s']:.2f} | {r['max_s']:.2f} | "
                     f"{goal} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts of ./run.sh")
    parser.add_argument("--cycles", type=int, default=3, help="cycles over the five pages")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"Debian's Chromium is not at {CHROMIUM} (apt-get install chromium)")
    # setup_env.sh must skip pip (a warm setup); run it once so the first timed run is warm too
    subprocess.run(["scripts/setup_env.sh", "runtime"], cwd=REPO, check=True)
    from playwright.sync_api import sync_playwright

    command = " ".join(["nice .venv/bin/python bench/app_timing.py", *map(shlex.quote,
                                                                          sys.argv[1:])])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="uif-app-timing-") as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        ready, kept = time_to_ready(browser, args.runs, Path(tmp))
        proc, context, page = kept
        try:
            visits = page_switch(page, args.cycles)
        finally:
            context.close()
            stop_server(proc)
            browser.close()
        scripts = script_times(args.cycles, Path(tmp) / "apptest")
    load_after = os.getloadavg()

    first = [v for v in visits if v["first"]]
    later = [v for v in visits if not v["first"]]
    rows = [row("time to ready: /_stcore/health ok", [r["health_s"] for r in ready],
                READY_GOAL_S),
            row("(part) browser page loaded (HTML + JS)", [r["page_loaded_s"] for r in ready],
                None),
            row("(part) Model page title shown (app.py + page imports done)",
                [r["title_s"] for r in ready], None),
            row("time to ready: Model page shows the metrics", [r["model_metrics_s"]
                                                               for r in ready], READY_GOAL_S),
            row("(after) Model page run finished (channel groups table too)",
                [r["model_done_s"] for r in ready], None),
            row("page switch: first visit (cold caches), all pages",
                [v["done_s"] for v in first], SWITCH_GOAL_S)]
    if later:
        rows.append(row("page switch: later visits, all pages", [v["done_s"] for v in later],
                        SWITCH_GOAL_S))
    for title in PAGES:
        cold = [v["done_s"] for v in first if v["page"] == title]
        warm = [v["done_s"] for v in later if v["page"] == title]
        rows.append(row(f"page switch: {title}, first visit", cold, SWITCH_GOAL_S))
        if warm:
            rows.append(row(f"page switch: {title}, later visits", warm, SWITCH_GOAL_S))

    script_rows = [row(f"script run only (AppTest): {k}", v,
                       READY_GOAL_S if "first render" in k else SWITCH_GOAL_S)
                   for k, v in scripts.items()]
    load = ", ".join(f"{v:.2f}" for v in load_before)
    load_end = ", ".join(f"{v:.2f}" for v in load_after)
    print()
    print(f"Command: `{command}`")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU cores, "
          f"load average (1, 5, 15 min) {load} at the start, {load_end} at the end.")
    print()
    print(table(rows))
    print()
    print("The same runs without a browser (Streamlit's AppTest, in the bench's process):")
    print()
    print(table(script_rows))
    result = {"command": command, "date": datetime.now(UTC).isoformat(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_start": list(load_before), "loadavg_end": list(load_after)},
              "runs": args.runs, "cycles": args.cycles, "rows": rows, "script_rows": script_rows,
              "ready": ready, "visits": visits}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {args.json.relative_to(REPO) if args.json.is_relative_to(REPO) else args.json}")


if __name__ == "__main__":
    main()
