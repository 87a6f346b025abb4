"""Steps the browser journeys share against the running app (Playwright, Debian's Chromium):
check a page shows no exception or error, open a page from the sidebar, download a file,
take a screenshot. One place for the app's test ids, so a Streamlit change is fixed once."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
LOAD_MS = 90_000  # a page, a button's answer or a download on the loaded test machine


def no_trouble(page: Page) -> None:
    """The page shows no Python exception and no error box."""
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


def go(page: Page, title: str, timeout: float = LOAD_MS, attempts: int = 3) -> None:
    """Open the page ``title`` from the sidebar and wait for its heading.

    A click that lands while a finished background job redraws the current page (its polling
    fragment calls ``st.rerun``) can be overtaken by that redraw, leaving the browser where it
    was; a person would click again, and so does this step, up to ``attempts`` times."""
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=title)
    heading = page.get_by_role("heading", name=title, exact=True)
    expect(link).to_be_visible(timeout=timeout)
    for _ in range(attempts - 1):
        link.click()
        try:
            heading.wait_for(state="visible", timeout=timeout / attempts)
            return
        except PlaywrightTimeout:
            continue
    link.click()
    expect(heading).to_be_visible(timeout=timeout)


def download(page: Page, button: str, target: Path, timeout: float = LOAD_MS) -> Path:
    """Click the download button named ``button`` once it shows; save its file at ``target``."""
    found = page.get_by_role("button", name=button, exact=True)
    expect(found).to_be_visible(timeout=timeout)
    with page.expect_download(timeout=timeout) as info:
        found.click()
    info.value.save_as(target)
    return target


def shot(page: Page, name: str, folder: Path = SHOTS) -> None:
    """A full-page screenshot ``folder/name`` once the page has settled."""
    folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)
    page.screenshot(path=str(folder / name), full_page=True)
