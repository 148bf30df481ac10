"""What a user does: JupyterLab on localhost, the analysis and teaching notebooks in headless Chromium, widgets.

Needs Debian's chromium and the playwright package (.ci/run installs both); skips without them.
Screenshots land in outputs/browser/ (kept as CI artifacts): one per explorer view, the teaching
notebook's plans before and after a slider moved, and with L2-SP picked (its pull figure).
"""
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studylib.study.grid import run_grid
from studylib.views.report import write_report

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "outputs" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GRID = ("dataset: synthetic\nsynthetic_size: 120\nbackbone: tinycnn\nimage_size: 16\nmax_epochs: 2\nlp_epochs: 1\n"
        "device: cpu\nstrategy: [ft, lp, auto_rgn]\nseed: 684\n")


NOTEBOOK_WORDS = ".jp-RenderedMarkdown, .jp-OutputArea-output"  # what a reader sees, not the code
NOTEBOOK_SCROLLER = ".jp-WindowedPanel-outer, .jp-NotebookPanel-notebook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_parameters(name: str, target: Path, source: str) -> None:
    """A copy of a shipped notebook whose parameters cell holds `source` (what papermill would inject)."""
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    params = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = source
    target.write_text(json.dumps(notebook))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """JupyterLab serving one folder (the analysis notebook on a small grid, the teaching notebook at small
    settings), started once for both tests; yields (the folder, a function from a notebook's name to its URL)."""
    tmp_path = tmp_path_factory.mktemp("lab")
    (tmp_path / "g.yaml").write_text(GRID)
    run_grid(tmp_path / "g.yaml", tmp_path / "results", engine="inline", progress=False)
    with_parameters("analysis.ipynb", tmp_path / "analysis.ipynb",
                    f'results_dir = "{tmp_path / "results"}"\n'
                    'metric = "balanced_accuracy"\nn_boot = 100\ncorrection = "holm"\n')
    with_parameters("teaching.ipynb", tmp_path / "teaching.ipynb",
                    'backbone = "tinycnn"\nplan_epochs = 8\nmini_size = 160\nmini_epochs = 5\nmini_seeds = 2\n'
                    f'workers = 1\npretrain_size = 200\nout_dir = "{tmp_path / "teach"}"\n')
    settings = tmp_path / "lab-settings"
    # Render every cell (JupyterLab's default windowing leaves off-screen cells out of the page) and
    # skip the news prompt.
    for name, value in (("notebook-extension/tracker", {"windowingMode": "none"}),
                        ("apputils-extension/notification", {"fetchNews": "false"})):
        target = settings / "@jupyterlab" / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    port, token = free_port(), "studylib-test"
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                               "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={tmp_path}",
                               "--ServerApp.open_browser=False", "--allow-root",
                               f"--LabApp.user_settings_dir={settings}",
                               # no tabs restored from another run
                               f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    # a workspace per notebook: the second test's page shows its notebook alone, not the first one's tab too
    yield tmp_path, lambda notebook: f"{base}/lab/workspaces/{Path(notebook).stem}/tree/{notebook}?token={token}"
    server.terminate()
    server.wait(timeout=30)


def open_and_run(page, url: str, ready, tmp_path: Path) -> None:
    """Open a notebook, wait for its kernel, Run All until `ready` (a locator) appears."""
    page.goto(url, timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
    page.wait_for_timeout(2_000)  # the kernel dialog, when JupyterLab shows one, comes up within this
    accept_kernel_dialog(page)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    for attempt in range(3):  # a Run All that lands while the kernel starts can stop after the first cell
        try:
            run_all_cells(page)
        except (AssertionError, playwright.TimeoutError):
            page.screenshot(path=str(SHOTS / "run-all-failed.png"), full_page=True)
            raise
        try:
            ready.wait_for(timeout=180_000)
            return
        except playwright.TimeoutError:
            page.screenshot(path=str(tmp_path / f"after-run-all-{attempt}.png"), full_page=True)
    raise AssertionError("the notebook never reached its widgets")


def last_image_changes(page, before: str) -> None:
    page.wait_for_function("src => { const imgs = document.querySelectorAll('.widget-output img');"
                           " return imgs.length && imgs[imgs.length - 1].src !== src"
                           " && imgs[imgs.length - 1].complete; }",
                           arg=before, timeout=60_000)


def no_errors_or_warnings(page) -> None:
    """No cell shows a traceback or anything on stderr (warnings included)."""
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.locator(".jp-RenderedText:has-text('Traceback')").count() == 0


SIZES = ((1024, 768), (1400, 900))  # a projector, a laptop
def _raw_ids() -> re.Pattern:
    """Every registered strategy id with an underscore (lp_ft, discriminative_lr, ...): pages show labels (LP-FT)."""
    from studylib.training.strategies import list_strategies

    return re.compile(r"\b(" + "|".join(s for s in list_strategies() if "_" in s) + r")\b")


RAW_IDS = _raw_ids()
RAW_MARKDOWN = re.compile(r"`|\*\*|(?<![\w*])\*[A-Za-z][^*\n]{0,60}\*(?![\w*])")
TEMPLATE = re.compile(r"\{[a-z_.]+(:[^}]*)?\}")
FIGURES_JS = ("() => [...document.images].filter(i => i.src.startsWith('data:image/png') && i.offsetParent)"
              ".map(i => [i.src, i.naturalWidth, i.getBoundingClientRect().width])")


def holds_up(page, name: str, words: str, scroller: str = "") -> None:
    """At a projector's size and a laptop's: nothing makes the page (or `scroller`, the notebook's scrolling panel)
    scroll sideways; the text in `words` (a selector) has no raw Markdown, template fields or registry ids; every
    figure is studylib's PNG and its smallest text shows at 9 pt or more (its font, its dpi, its displayed width)."""
    import base64
    import io

    from PIL import Image

    from studylib.views.runfigures import DPI, MIN_FONT_KEY

    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(300)  # the layout settles
        sideways = page.evaluate("sel => [document.scrollingElement, ...(sel ? document.querySelectorAll(sel) : [])]"
                                 ".map(e => [e.scrollWidth, e.clientWidth])", scroller)
        assert all(scroll <= client + 1 for scroll, client in sideways), (name, width, sideways)
        text = "\n".join(page.locator(words).all_inner_texts())
        for pattern in (RAW_MARKDOWN, TEMPLATE, RAW_IDS):
            found = pattern.search(text)
            assert found is None, (name, width, text[max(0, found.start() - 80):found.end() + 80])
        figures = page.evaluate(FIGURES_JS)
        assert figures, name
        for src, natural, shown in figures:
            info = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).info
            assert MIN_FONT_KEY in info, (name, "a figure not drawn by studylib", natural)
            points = float(info[MIN_FONT_KEY]) * DPI / 96 * shown / natural
            assert points >= 9, (name, width, natural, shown, info[MIN_FONT_KEY])
        page.screenshot(path=str(SHOTS / f"{name}-{width}x{height}.png"))


LAST_COUNT = ("() => Math.max(0, ...[...document.querySelectorAll('.jp-InputPrompt')]"
              ".map(e => parseInt((e.textContent.match(/\\[(\\d+)\\]/) || [0, 0])[1])))")


def accept_kernel_dialog(page) -> None:
    """JupyterLab sometimes asks which kernel to start (when the page loads before the kernel specs do):
    take the preselected Python 3, as a user would."""
    dialog = page.locator(".jp-Dialog:has-text('Select Kernel')")
    if dialog.count():
        dialog.get_by_role("button", name="Select").click()
        dialog.wait_for(state="detached", timeout=30_000)


def run_all_cells(page) -> None:
    """Run > Run All Cells, retried until a cell has run since the click (a click can land while the
    kernel is still starting and be dropped)."""
    for _ in range(4):
        before = page.evaluate(LAST_COUNT)  # execution counts so far: a retry must see a new one
        accept_kernel_dialog(page)
        page.keyboard.press("Escape")  # close a menu left open or a start-up dialog that would cover the menu bar
        page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=30_000)
        page.locator(".lm-Menu-content").get_by_text("Run All Cells", exact=True).click(timeout=30_000)
        try:
            page.wait_for_function(f"before => ({LAST_COUNT})() > before", arg=before, timeout=30_000)
            return
        except playwright.TimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError("JupyterLab never ran the notebook's cells")


@pytest.mark.slow
def test_analysis_notebook_widgets_render_and_respond_and_report_opens(served):
    tmp_path, lab = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        view = page.get_by_label("view", exact=True)
        open_and_run(page, lab("analysis.ipynb"), view, tmp_path)
        page.screenshot(path=str(SHOTS / "analysis-after-run-all.png"), full_page=True)
        assert page.locator(".widget-dropdown select").count() == 6
        figure = page.locator(".widget-output img").last
        figure.wait_for(timeout=120_000)
        explorer = page.locator(".widget-output").last
        views = [name.replace("\xa0", " ") for name in view.locator("option").all_inner_texts()]
        assert "gain over FT" in views and "reliability diagram" in views
        page.get_by_label("strategy", exact=True).select_option(label="Auto-RGN")  # labels, not registry ids
        for name in views:  # every view: one figure (or its message), none left from the view before
            before = figure.get_attribute("src") if explorer.locator("img").count() else ""
            view.select_option(name)
            if name != views[0]:  # a new image, or a view with nothing to draw for this grid saying why
                page.wait_for_function(
                    "src => { const outs = document.querySelectorAll('.widget-output');"
                    " const out = outs[outs.length - 1];"
                    " const img = out.querySelector('img');"
                    " return img ? img.src !== src : out.innerText.trim().length > 0; }",
                    arg=before, timeout=60_000)
            assert explorer.locator("img").count() <= 1, name
            explorer.screenshot(path=str(SHOTS / f"explorer-{name.replace(' ', '_')}.png"))
        # A run view prints its run's name before its figure, and the walk moves on at the name: on a slow kernel
        # the figures arrive later, each callback in turn; wait for the one the headless run checks.
        drawn = tmp_path / "results" / "figures" / "explorer-per-block_learning_rate.png"
        deadline = time.monotonic() + 120
        while not drawn.is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        before = figure.get_attribute("src")
        view.select_option("gain over FT")
        last_image_changes(page, before)  # the gain view is drawn before its metric changes
        for metric in ("macro F1", "AUROC"):
            before = figure.get_attribute("src")
            page.get_by_label("metric", exact=True).select_option(label=metric)
            last_image_changes(page, before)
            explorer.screenshot(path=str(SHOTS / f"explorer-gain_over_FT-{metric.replace(' ', '_')}.png"))
        no_errors_or_warnings(page)
        holds_up(page, "analysis", NOTEBOOK_WORDS, NOTEBOOK_SCROLLER)
        report = write_report(tmp_path / "results", n_boot=100)[1]
        page.goto(report.as_uri())
        holds_up(page, "report", "body")
        page.set_viewport_size({"width": 1400, "height": 1000})
        for title in ("Gain in test balanced accuracy over FT per dataset x backbone",
                      "Auto-RGN: per-block learning rate over epochs"):
            image = page.locator(f"img[alt='{title}']")
            assert image.evaluate("img => img.complete && img.naturalWidth > 100"), title
        page.screenshot(path=str(SHOTS / "report.png"), full_page=True)
        browser.close()
    for name in ("explorer-per-block_learning_rate.png", "gain_heatmap.png", "explorer-gain_over_FT.png"):
        assert (tmp_path / "results" / "figures" / name).is_file(), name  # what the headless run checks


@pytest.mark.slow
def test_teaching_notebook_plans_redraw_when_a_slider_moves(served):
    tmp_path, lab = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        inside = page.get_by_label("strategies", exact=True).last  # the last widget: section 6's explorer
        open_and_run(page, lab("teaching.ipynb"), page.locator(".widget-select-multiple").nth(1), tmp_path)
        plans = page.locator(".widget-output").first
        image = plans.locator("img")
        image.wait_for(timeout=60_000)
        plans.screenshot(path=str(SHOTS / "teaching-plans-before.png"))
        before = image.get_attribute("src")
        readout = page.locator(".widget-slider:has-text('LP-FT: LP epochs') .widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("5")
        page.keyboard.press("Enter")  # the slider's value box: as a user types a value
        page.wait_for_function("src => { const img = document.querySelector('.widget-output img');"
                               " return img && img.src !== src; }", arg=before, timeout=60_000)
        assert readout.inner_text().strip() == "5"
        plans.screenshot(path=str(SHOTS / "teaching-plans-after-lp-epochs-5.png"))
        page.locator(".widget-select-multiple select").first.select_option(label=["FT", "L2-SP"])
        pull = plans.locator("img").nth(1)  # picking an SP strategy adds the figure of its pull back to w0
        pull.wait_for(timeout=60_000)  # (its alpha sliders are driven in tests/views/test_teaching.py)
        page.wait_for_function("() => [...document.querySelectorAll('.widget-output')[0].querySelectorAll('img')]"
                               ".every(img => img.complete && img.naturalHeight > 0)", timeout=60_000)
        pull.scroll_into_view_if_needed()
        pull.screenshot(path=str(SHOTS / "teaching-sp-pull.png"))
        assert inside.count() == 1
        page.screenshot(path=str(SHOTS / "teaching-after-run-all.png"), full_page=True)
        text = page.locator(".jp-Notebook").inner_text()
        assert "Seed-to-seed spread" in text and "Top block (stage3)" in text
        assert "Gains over FT, paired by seed" in text and "In this Auto-RGN run (seed" in text
        no_errors_or_warnings(page)
        holds_up(page, "teaching", NOTEBOOK_WORDS, NOTEBOOK_SCROLLER)
        page.set_viewport_size({"width": 1024, "height": 768})
        plans.scroll_into_view_if_needed()
        plans.screenshot(path=str(SHOTS / "teaching-plans-1024x768.png"))
        browser.close()
    # what tests/study/test_analysis.py checks of a headless run, where no browser is
    teach = tmp_path / "teach"
    assert (teach / "figures" / "strategy_maps.png").is_file() and (teach / "figures" / "inside.png").is_file()
    assert len(list((teach / "runs").glob("*/metrics.json"))) == 5 * 2
