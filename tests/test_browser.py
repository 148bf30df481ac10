"""What a user does: JupyterLab on localhost, the analysis notebook in headless Chromium, widgets.

Needs Debian's chromium and the playwright package (.ci/run installs both); skips without them.
"""
import json
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

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GRID = ("dataset: synthetic\nsynthetic_size: 120\nbackbone: tinycnn\nimage_size: 16\nmax_epochs: 2\nlp_epochs: 1\n"
        "device: cpu\nstrategy: [ft, lp, auto_rgn]\nseed: 684\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "g.yaml").write_text(GRID)
    run_grid(tmp_path / "g.yaml", tmp_path / "results", engine="inline", progress=False)
    notebook = json.loads((ROOT / "notebooks" / "analysis.ipynb").read_text())
    params = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = f'results_dir = "{tmp_path / "results"}"\nmetric = "balanced_accuracy"\nn_boot = 100\ncorrection = "holm"\n'
    (tmp_path / "analysis.ipynb").write_text(json.dumps(notebook))
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
                               "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                               "--ServerApp.open_browser=False", "--allow-root",
                               f"--LabApp.user_settings_dir={settings}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    yield f"{base}/lab/tree/analysis.ipynb?token={token}"
    server.terminate()
    server.wait(timeout=30)


def run_all_cells(page) -> None:
    """Run > Run All Cells, retried until the first code cell has run (a click can land while the
    kernel is still starting and be dropped)."""
    for _ in range(4):
        page.keyboard.press("Escape")  # close a menu left open or a start-up dialog that would cover the menu bar
        page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=30_000)
        page.locator(".lm-Menu-content").get_by_text("Run All Cells", exact=True).click(timeout=30_000)
        try:
            page.wait_for_selector(".jp-InputPrompt:has-text('[1]')", timeout=30_000)
            return
        except playwright.TimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError("JupyterLab never ran the notebook's cells")


def test_analysis_notebook_widgets_render_and_respond_and_report_opens(lab, tmp_path):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(lab, timeout=120_000)
        page.wait_for_selector(".jp-NotebookPanel", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        view = page.get_by_label("view", exact=True)
        for attempt in range(3):  # a Run All that lands while the kernel starts can stop after the first cell
            run_all_cells(page)
            try:
                view.wait_for(timeout=150_000)
                break
            except playwright.TimeoutError:
                page.screenshot(path=str(tmp_path / f"after-run-all-{attempt}.png"), full_page=True)
                if attempt == 2:
                    raise
        page.screenshot(path=str(tmp_path / "after-run-all.png"), full_page=True)
        assert page.locator(".widget-dropdown select").count() == 6
        figure = page.locator(".widget-output img").last
        figure.wait_for(timeout=120_000)
        before = figure.get_attribute("src")
        view.select_option("per-block learning rate")
        page.get_by_label("strategy", exact=True).select_option("auto_rgn")
        page.wait_for_function("src => { const imgs = document.querySelectorAll('.widget-output img');"
                               " return imgs.length && imgs[imgs.length - 1].src !== src; }", arg=before,
                               timeout=60_000)
        page.screenshot(path=str(tmp_path / "lab.png"))
        report = write_report(tmp_path / "results", n_boot=100)[1]
        page.goto(report.as_uri())
        for title in ("Gain over FT per dataset x backbone", "Auto-RGN: per-block learning rate over epochs"):
            image = page.locator(f"img[alt='{title}']")
            assert image.evaluate("img => img.complete && img.naturalWidth > 100"), title
        browser.close()
    assert (tmp_path / "results" / "figures" / "explorer-per-block_learning_rate.png").is_file()
