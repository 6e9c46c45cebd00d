"""tap ui in a real browser (issue 27): headless Chromium (Debian's, installed by
scripts/tools.sh) driven by Playwright loads the runs page, a run page and a compare page of
a store that `tap run` filled, waits for the charts, and checks from the DOM that each chart
drew its series, that sorting, filtering, a column pick and clicking a run work, and that a
hostile name shows as text (and no dialog opens). Screenshots go to $TAP_BROWSER_OUT
(default target/browser-test/). It also times, from the navigation's start, every chart of a
run of 10 metrics x 1,000,000 points drawn, and prints it (no timed assertion: the figure
goes to README through scripts/bench-ui.sh).

Needs TAP_BIN (the tap binary) and CHROMIUM (default /usr/bin/chromium); where Chromium is
missing the test says why and stops.
"""

import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[4]
TAP = os.environ.get("TAP_BIN", str(REPO / "target" / "debug" / "tap"))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
OUT = pathlib.Path(os.environ.get("TAP_BROWSER_OUT", REPO / "target" / "browser-test"))
# The big run: the figure.
BIG_METRICS = int(os.environ.get("TAP_BROWSER_BIG_METRICS", "10"))
BIG_POINTS = int(os.environ.get("TAP_BROWSER_BIG_POINTS", "1000000"))
# One step of the big run far above the rest: it must survive downsampling.
SPIKE = BIG_POINTS * 7 // 9
HOSTILE = "<img src=x onerror=alert(1)>\"'</textarea><script>alert(2)</script>"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

TRAINING = """
import tapml
hp = tapml.hparams()
lr = float(hp["lr"])
for s in range(200):
    tapml.log(s, loss=1.0 / (1.0 + s * lr * 10), acc=min(1.0, s * lr))
"""

BIG = """
import tapml
tapml.log(0, **{f"m{i:02}": 1.0 for i in range(%d)})
""" % BIG_METRICS


def tap(home, *args, check=True):
    env = dict(os.environ, TAP_HOME=str(home))
    env.pop("TAP_OUTPUT", None)
    r = subprocess.run([TAP, *args], env=env, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"tap {' '.join(args)}: {r.stderr}")
    return r.stdout


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: scripts/tools.sh installs Debian's chromium (apt-get, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A store with a sweep, a hostile tag and note, and a big run; `tap ui` serving it."""
    home = tmp_path_factory.mktemp("home")
    tap(home, "params", "set", "epochs", "3")
    for lr in ["0.001", "0.003", "0.01", "0.03", "0.1"]:
        tap(home, "run", "-e", "sweep", "--name", f"lr-{lr}", "--param", f"lr={lr}", "--", sys.executable, "-c", TRAINING)
    tap(home, "runs", "tag", "lr-0.1", "evil=" + HOSTILE)
    tap(home, "runs", "note", "lr-0.1", HOSTILE)
    tap(home, "run", "-e", "big", "--name", "big", "--", sys.executable, "-c", BIG)
    big = json.loads(tap(home, "runs", "show", "big", "--output", "json"))["run"]["run_id"]
    fill(home / "tap.db", "big", big)
    proc = subprocess.Popen([TAP, "ui", "--port", "0"], env=dict(os.environ, TAP_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("tap ui: serving "), line + proc.stderr.read()
    url = line.split("serving ", 1)[1].strip()
    yield url, big
    proc.terminate()
    proc.wait(timeout=10)


def fill(db, experiment, run_id):
    """BIG_METRICS x BIG_POINTS points of the big run, written straight into the store's
    metrics table (through `tap run` they would take minutes), the store then marked as one of
    the release before chart tiles (version 2), so that `tap ui` opening it builds the tiles
    of every point: the upgrade path, exercised."""
    con = sqlite3.connect(db)
    with con:
        rows = ((experiment, run_id, step, f"m{m:02}", 1.0 / (1.0 + step / 1000.0) + (10.0 if step == SPIKE else 0.0), step)
                for step in range(1, BIG_POINTS) for m in range(BIG_METRICS))
        con.executemany(
            "INSERT INTO metrics (experiment_id, run_id, step, name, value, ts_ms) VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute("DELETE FROM metric_tiles")
    con.execute("PRAGMA user_version = 2")
    con.close()


def shot(page, name):
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def charts_drawn(page, timeout=60_000):
    page.wait_for_selector("body[data-charts-done='1']", timeout=timeout)
    figs = page.query_selector_all("figure.chart")
    for f in figs:
        assert f.get_attribute("data-drawn") == "1", f.inner_text()
        assert f.query_selector("canvas") is not None
    return figs


def column_of(page, field):
    heads = [h.get_attribute("data-field") for h in page.query_selector_all("table#runs thead th")]
    i = heads.index(field)
    return [r.query_selector_all("td")[i].inner_text() for r in page.query_selector_all("table#runs tbody tr")]


def test_runs_run_and_compare_pages_in_a_real_browser(browser, served):
    url, _ = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(url)
    assert len(page.query_selector_all("table#runs tbody tr")) == 6

    # Sort by a column, both ways.
    page.click("th[data-field='param.lr'] a")
    page.wait_for_load_state()
    up = [float(v) for v in column_of(page, "param.lr") if v != "–"]
    assert up == sorted(up) and len(up) == 5
    page.click("th[data-field='param.lr'] a")
    page.wait_for_load_state()
    assert [float(v) for v in column_of(page, "param.lr") if v != "–"] == sorted(up, reverse=True)

    # Filter by a hyperparameter range.
    page.fill("#where", "param.lr>=0.01, param.lr<0.1")
    page.click("#filter button[type=submit]")
    page.wait_for_load_state()
    assert sorted(float(v) for v in column_of(page, "param.lr")) == [0.01, 0.03]

    # Pick a column: the hostile tag, shown as text.
    page.goto(url)
    page.click("#columns summary")
    page.fill("#column-filter", "evil")
    page.check("input[name=col][value='tag.evil']")
    page.click("#apply-columns")
    page.wait_for_load_state()
    assert HOSTILE in column_of(page, "tag.evil")
    assert page.query_selector("table#runs img") is None
    shot(page, "runs")

    # Click a run: its charts draw, the note is text.
    page.click("a.run-link:text('lr-0.1')")
    page.wait_for_load_state()
    figs = charts_drawn(page)
    assert sorted(f.get_attribute("data-metric") for f in figs) == ["acc", "loss"]
    assert all(f.get_attribute("data-series") == "1" and int(f.get_attribute("data-points")) == 200 for f in figs)
    assert HOSTILE in page.inner_text("dl.facts")
    page.wait_for_selector("#goodput[data-loaded='1']")
    page.wait_for_selector("#checkpoints[data-loaded='1']")
    page.wait_for_function("() => { const i = document.getElementById('timeline'); return i.complete && i.naturalWidth > 0; }")
    shot(page, "run")

    # Compare three runs: three series a chart, the diff, a line a run in the parallel plot.
    page.goto(url)
    for name in ["lr-0.001", "lr-0.01", "lr-0.1"]:
        page.check(f"tr:has(a.run-link:text-is('{name}')) input[name=run]")
    page.click("#compare")
    page.wait_for_load_state()
    figs = charts_drawn(page)
    assert len(figs) == 2 and all(f.get_attribute("data-series") == "3" for f in figs)
    assert "lr" in page.inner_text("#diff") and "epochs" not in page.inner_text("#diff")
    assert len(page.query_selector_all("#parallel polyline.run-line")) == 3
    page.check("#log-y")
    assert all(f.query_selector("canvas") for f in page.query_selector_all("figure.chart"))
    shot(page, "compare")

    assert dialogs == [], f"a hostile name ran: {dialogs}"
    assert errors == [], errors


def test_a_run_of_ten_metrics_of_a_million_points(browser, served):
    url, big = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}runs/big/{big}")
    figs = charts_drawn(page, timeout=120_000)
    assert len(figs) == BIG_METRICS
    drawn_ms = int(page.get_attribute("body", "data-charts-done-ms"))
    for f in figs:
        assert int(f.get_attribute("data-total")) == BIG_POINTS
        assert int(f.get_attribute("data-points")) <= 2 * 4000 + 1
    print(f"\ntap ui: every chart of {BIG_METRICS} x {BIG_POINTS:,} points drawn {drawn_ms} ms after navigation "
          f"(budget 1500 ms; binary {TAP})")
    # The spike of one step survives downsampling; zooming refetches full resolution.
    spike = page.evaluate("""async () => {
        const r = await fetch(document.querySelector('figure.chart').dataset.src + '&points=500');
        const j = await r.json();
        return Math.max(...j.values);
    }""")
    assert spike > 10.0
    # Two drags of 10 pixels: the second range holds fewer points than the chart's buckets.
    first = page.query_selector("figure.chart")
    for n in (1, 2):
        box = first.query_selector(".u-over").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5 + 10, box["y"] + 20, steps=3)
        page.mouse.up()
        page.wait_for_selector(f"figure.chart[data-zooms='{n}']", timeout=60_000)
    assert first.get_attribute("data-points") == first.get_attribute("data-total"), "zoomed in: every point"
    assert 0 < int(first.get_attribute("data-total")) < BIG_POINTS // 100
    shot(page, "big-run")
