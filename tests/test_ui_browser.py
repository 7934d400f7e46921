"""The Dagster UI over a finished tiny-sky run, driven in a real browser.

``astroclip run`` materializes the tiny sky's graph into a fresh DAGSTER_HOME; ``dg dev`` (the
same server ``dagster dev`` starts) serves it on 127.0.0.1; Playwright for Python drives
Debian's Chromium (``/usr/bin/chromium``, which ``.ci/run`` installs; no browser download). The
test loads the lineage, dismisses the community dialog when it appears, opens ``pairs`` and
``evaluation`` and checks that every figure in their metadata renders as an image of non-zero
size, then materializes one ``embeddings`` partition by clicking through the asset page's
Materialize dialog and waits for that run to succeed. On failure it saves a screenshot of the
page under the test's tmp folder and prints the path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 300.0
# The metadata entry Dagster shows as a button that opens the rendered markdown.
SHOW_MARKDOWN = "[Show Markdown]"


@dataclass(frozen=True)
class FinishedRun:
    """A tiny-sky run done by ``astroclip run``: its instance folder and data root."""

    dagster_home: Path
    storage: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(run: FinishedRun) -> dict[str, str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(run.dagster_home),
        "ASTROCLIP_STORAGE": str(run.storage),
        "OMP_NUM_THREADS": "1",
    }
    return env


def _restore_sigint() -> None:
    # A shell that starts pytest in the background leaves SIGINT ignored, and children inherit
    # that; dagster dev maps SIGTERM onto the SIGINT handler, so it would ignore both.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """The whole graph over the tiny sky, with few training steps, recorded in its own instance."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(apt-get install -y chromium), as .ci/run does"
        )
    root = tmp_path_factory.mktemp("ui")
    run = FinishedRun(dagster_home=root / "dagster_home", storage=root / "data")
    run.dagster_home.mkdir()
    # The project's instance settings (queued runs, run monitoring, concurrency), as a user has.
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", run.dagster_home / "dagster.yaml")
    command = [str(BIN / "astroclip"), "run", "--storage", str(run.storage), "--sky-size", "tiny"]
    command += ["--steps", "4", "--batch-size", "8", "--device", "cpu"]
    proc = subprocess.run(command, env=_env(run), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@dataclass(frozen=True)
class Server:
    """A running ``dg dev``: its base URL and the log file it writes."""

    url: str
    log: Path


@pytest.fixture(scope="module")
def server(finished_run: FinishedRun) -> Iterator[Server]:
    """``dg dev`` (webserver and daemon) from the repository root over the finished run."""
    port = _free_port()
    log = finished_run.dagster_home.parent / "dg-dev.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=_env(finished_run),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_restore_sigint,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"dg dev exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"dg dev not up in 180 s: {log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/server_info", timeout=2).read()
                break
            time.sleep(0.5)
        yield Server(url=url, log=log)
    finally:
        # SIGINT is what stops dagster dev cleanly; then the whole session (code servers and
        # any run process it started) goes.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def _screenshot_on_failure(page, folder: Path, name: str) -> Iterator[None]:
    """Save the page as ``folder/<name>.png`` (and print where) when the block raises."""
    try:
        yield
    except BaseException:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failed step: {path}")
        raise


def _markdown_entries(instance: dg.DagsterInstance, asset: str) -> dict[str, bool]:
    """Markdown metadata entries of ``asset``'s latest materialization: name -> holds a PNG."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None and event.asset_materialization is not None, asset
    return {
        key: "data:image/png;base64," in value.md_str
        for key, value in event.asset_materialization.metadata.items()
        if isinstance(value, dg.MarkdownMetadataValue)
    }


def _check_figures(page, base: str, asset: str, entries: dict[str, bool]) -> None:
    """Open ``asset``'s page and every markdown entry of it; each figure has a non-zero size.

    ``entries``: every markdown entry's name -> whether it is a figure (holds a PNG); a
    non-figure entry with a button (a long table) must open and close too.
    """
    page.goto(f"{base}/assets/{asset}")
    buttons = page.get_by_text(SHOW_MARKDOWN, exact=True)
    buttons.first.wait_for(timeout=UI_TIMEOUT_MS)
    rows = page.locator("tr").filter(has=buttons)
    names = [rows.nth(i).locator("td").first.inner_text().strip() for i in range(rows.count())]
    # Every figure has its button; Dagster shows a short markdown entry inline, without one.
    figures = {name for name, is_figure in entries.items() if is_figure}
    assert figures <= set(names) <= set(entries), (asset, names, entries)
    for i in range(buttons.count()):
        buttons.nth(i).click()
        if not entries[names[i]]:
            page.get_by_role("dialog").first.wait_for(timeout=UI_TIMEOUT_MS)
            _close_dialogs(page, f"{asset}: the dialog of {names[i]}")
            continue
        images = page.get_by_role("dialog").locator("img")
        images.first.wait_for(timeout=UI_TIMEOUT_MS)
        page.wait_for_function(
            "() => [...document.querySelectorAll('[role=dialog] img')].every(i => i.complete)",
            timeout=UI_TIMEOUT_MS,
        )
        sizes = images.evaluate_all(
            "els => els.map(e => [e.naturalWidth, e.naturalHeight,"
            " e.getBoundingClientRect().width, e.getBoundingClientRect().height])"
        )
        assert sizes, (asset, names[i])
        for natural_w, natural_h, shown_w, shown_h in sizes:
            assert natural_w > 0 and natural_h > 0, (asset, names[i], sizes)
            assert shown_w > 0 and shown_h > 0, (asset, names[i], sizes)
        _close_dialogs(page, f"{asset}: the dialog of {names[i]}")


def _close_dialogs(page, what: str, tries: int = 6) -> None:
    """Press Escape until no dialog is left open (``what`` names it in the failure).

    The community dialog can open on top of a figure's dialog at any moment; one Escape then
    closes only one of them (or is taken by the locator handler's own click), so try again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for _ in range(tries):
        page.keyboard.press("Escape")
        try:
            page.get_by_role("dialog").first.wait_for(state="detached", timeout=10_000)
            return
        except PlaywrightTimeoutError:
            continue
    raise AssertionError(f"{what} did not close after {tries} presses of Escape")


def test_ui_shows_figures_and_materializes_a_partition(
    finished_run: FinishedRun, server: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from pipelines.definitions import defs
    from pipelines.partitions import sky_partitions

    shots = tmp_path / "screenshots"
    instance = dg.DagsterInstance.from_config(str(finished_run.dagster_home))
    figures = {asset: _markdown_entries(instance, asset) for asset in ("pairs", "evaluation")}
    assert all(any(entries.values()) for entries in figures.values()), figures
    assert figures["evaluation"].get("paper_comparison") is False, figures
    partition = sorted(instance.get_dynamic_partitions(sky_partitions.name))[0]
    runs_before = {r.run_id for r in instance.get_runs()}
    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            # The "Join the Dagster community" dialog shows up once per instance, at any time.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(),
            )

            with _screenshot_on_failure(page, shots, "lineage"):
                page.goto(f"{server.url}/asset-groups")
                # The graph draws each (collapsed) group as a node inside an SVG foreignObject;
                # the sidebar beside it lists the same names, so look only in the graph.
                graph = page.locator("svg foreignObject")
                for group in sorted(groups):
                    graph.get_by_text(group, exact=True).first.wait_for()

            for asset, expected in figures.items():
                with _screenshot_on_failure(page, shots, asset):
                    _check_figures(page, server.url, asset, expected)

            with _screenshot_on_failure(page, shots, "materialize"):
                page.goto(f"{server.url}/assets/embeddings")
                page.get_by_role("button", name="Materialize…").click()
                # The partition list is a popover, also role=dialog: name the launch dialog.
                dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
                dialog.get_by_text("Select a partition or create one").click()
                # The key also shows on the page behind the dialog (and in hidden text-measuring
                # copies), so look for it only inside the popover that holds the partition filter;
                # a page-wide match can resolve to a copy the popover covers before the list has
                # drawn, and a click on that never lands.
                search = page.get_by_placeholder("Filter partitions")
                search.fill(partition)
                popover = page.locator(".bp5-portal").filter(has=search)
                popover.get_by_text(partition, exact=True).filter(visible=True).first.click()
                dialog.get_by_role("button", name="Launch 1 run").click()
                dialog.wait_for(state="detached")

                deadline = time.monotonic() + RUN_TIMEOUT_S
                while True:
                    new = [r for r in instance.get_runs() if r.run_id not in runs_before]
                    if new and new[0].is_finished:
                        break
                    assert time.monotonic() < deadline, f"no finished run in {RUN_TIMEOUT_S} s"
                    time.sleep(1.0)
                assert len(new) == 1, [r.run_id for r in new]
                run = new[0]
                assert run.tags.get("dagster/partition") == partition, run.tags
                assert run.status == dg.DagsterRunStatus.SUCCESS, (
                    run.status,
                    server.log.read_text()[-3000:],
                )
                latest = instance.fetch_materializations(
                    dg.AssetRecordsFilter(dg.AssetKey("embeddings"), asset_partitions=[partition]),
                    limit=1,
                ).records
                assert latest and latest[0].run_id == run.run_id, latest
                # The UI says so too.
                page.goto(f"{server.url}/runs/{run.run_id}")
                page.get_by_text("Success", exact=True).first.wait_for()
        finally:
            browser.close()
