"""Hostile uploads and workspace isolation against the real server started by ./run.sh.

Bad files from the corpus (``tests/security/make_corpus.py``) are uploaded through the Model
page's own uploaders: each gives a clear error box, the server's health endpoint still says
"ok", the pickle / Lambda payloads never create their marker, and the name the browser sent
never becomes a path. Two browser contexts get different workspace tokens; a malformed or
path-like token is replaced, and no URL serves another workspace's files.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest
from playwright.sync_api import Browser, Page, expect

from uif_explorer import zoo
from uif_explorer.ui.workspace import is_valid_token

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "security"))
from make_corpus import MARKER_NAME, Case, build_corpus  # noqa: E402

LOAD_TIMEOUT_MS = 90_000
WORKSPACES = REPO_ROOT / "workspaces"  # run.sh's default root (UIF_WORKSPACES unset)
# corpus file -> (tab, uploader label, button)
UPLOADS = {
    "pickle_payload.pt": ("PyTorch weights", "Weights (.pth", "Load weights"),
    "zip_bomb_weights.pt": ("PyTorch weights", "Weights (.pth", "Load weights"),
    "truncated_state_dict.pt": ("PyTorch weights", "Weights (.pth", "Load weights"),
    "nan_weights.pt": ("PyTorch weights", "Weights (.pth", "Load weights"),
    "lambda_layer.keras": ("Keras (.keras)", "Keras model (.keras)", "Load Keras model"),
    "corrupt_program.pt2": ("torch.export (.pt2)", "Exported program (.pt2)", "Load program"),
    "workspace_traversal.zip": ("Workspace (.zip)", "Workspace folder (.zip)",
                                "Open workspace"),
    # evaluation images (issue 17): hostile zips of class folders
    "images_traversal.zip": ("Image folders (.zip)", "Image folders (.zip)", "Use these images"),
    "images_zip_bomb.zip": ("Image folders (.zip)", "Image folders (.zip)", "Use these images"),
    "images_only_text.zip": ("Image folders (.zip)", "Image folders (.zip)", "Use these images"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Case]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, {c.name: c for c in build_corpus(folder)}


def _token(page: Page) -> str:
    page.wait_for_url("**ws=*", timeout=LOAD_TIMEOUT_MS)
    values = parse_qs(urlparse(page.url).query).get("ws", [])
    assert len(values) == 1, page.url
    return values[0]


def _open_model_page(page: Page, url: str) -> None:
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    page.goto(url)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible(timeout=LOAD_TIMEOUT_MS)


def _upload(page: Page, tab: str, label: str, button: str, payload: dict) -> None:
    page.get_by_role("tab", name=tab).click()
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=label)
    uploader.locator("input[type=file]").set_input_files(payload)
    go = page.get_by_role("button", name=button)
    expect(go).to_have_count(1, timeout=LOAD_TIMEOUT_MS)  # a rerun can leave a stale copy
    expect(go).to_be_enabled(timeout=LOAD_TIMEOUT_MS)
    go.click()


@pytest.mark.parametrize("name", list(UPLOADS))
def test_bad_upload_gives_a_clear_message_and_the_server_stays_up(
    page: Page, app_url: str, app_health: Callable[[], str], corpus, name: str
) -> None:
    folder, cases = corpus
    case = cases[name]
    tab, label, button = UPLOADS[name]
    _open_model_page(page, app_url)
    token = _token(page)
    sent_name = "../../" + f"evil_{name}"  # what a hostile client could send as the name
    _upload(page, tab, label, button, {"name": sent_name, "mimeType": "application/octet-stream",
                                       "buffer": case.data})
    error = page.get_by_test_id("stAlertContentError")
    expect(error.first).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    text = " ".join(error.all_inner_texts())
    assert any(f.lower() in text.lower() for f in case.expect), text
    assert "Traceback" not in text
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible()  # model unchanged
    assert app_health() == "ok"
    assert not (folder / MARKER_NAME).exists()
    for where in (REPO_ROOT, REPO_ROOT.parent, WORKSPACES, WORKSPACES / token):
        assert not (where / f"evil_{name}").exists()
    if (WORKSPACES / token).exists():
        assert not list((WORKSPACES / token).rglob(f"*evil_{name}*"))


def test_sessions_get_their_own_workspaces_and_cannot_reach_others(
    browser: Browser, app_url: str, app_health: Callable[[], str]
) -> None:
    a_ctx, b_ctx = browser.new_context(), browser.new_context()
    ta = ""
    try:
        a, b = a_ctx.new_page(), b_ctx.new_page()
        _open_model_page(a, app_url)
        _open_model_page(b, app_url)
        ta, tb = _token(a), _token(b)
        assert is_valid_token(ta) and is_valid_token(tb) and ta != tb
        secret = WORKSPACES / ta / "secret.sens"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text('{"secret": "only-for-session-a-4f1c"}')
        # path-like and malformed tokens are replaced by a fresh one, never followed
        for bad in (f"../{ta}", f"{ta}/../{ta}", "../../etc/passwd", "..", ta[:8],
                    f"{ta}%00", "x" * 100):
            b.goto(f"{app_url}/?ws={quote(bad, safe='')}")
            expect(b.get_by_role("heading", name="ResNet-20")).to_be_visible(
                timeout=LOAD_TIMEOUT_MS)
            got = _token(b)
            assert got != ta and is_valid_token(got) and got != bad, (bad, got)
        # no URL of the server serves a workspace file
        for path in (f"/workspaces/{ta}/secret.sens", f"/app/static/../../workspaces/{ta}/"
                     "secret.sens", f"/media/../workspaces/{ta}/secret.sens",
                     f"/app/static/%2e%2e/%2e%2e/workspaces/{ta}/secret.sens",
                     f"/component/..%2f..%2fworkspaces%2f{ta}%2fsecret.sens"):
            try:
                with urllib.request.urlopen(app_url + path, timeout=10) as resp:
                    body = resp.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                body = exc.read().decode(errors="replace")
            assert "only-for-session-a-4f1c" not in body, path
        assert app_health() == "ok"
    finally:
        a_ctx.close()
        b_ctx.close()
        if ta:
            (WORKSPACES / ta / "secret.sens").unlink(missing_ok=True)
