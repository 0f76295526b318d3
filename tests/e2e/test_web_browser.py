"""`sia web` and `sia report` in a real browser (headless Chromium through Selenium), on a real
`sia run` of the tiny task (fake model and trainer, about 10 s): the dashboard shows the run's
numbers as run.db holds them, its score chart, lineage and a generation's diff; a generation
appended to run.db while the page is open appears without a reload; every request a page makes
goes to the dashboard's own server; and the `sia report` file opened from disk makes no request
at all. A screenshot of the run page is kept at tests/artifacts/web_run_page.png.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`, which
`make setup` does as root) and selenium (the dev extra); skipped, saying which is missing, without them.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from sia.checkpoints.rundb import RunDB
from sia.cli.main import main
from tests.fakes import fake_config, fake_model_cache, fake_services_for, make_tiny_task, shutdown

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: .venv/bin/pip install "
                                                              "selenium (it is in the dev extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # git-ignored; kept after the run
META_KEEP = json.dumps({"edit": "none"})
FEEDBACK = [json.dumps({"diagnosis": "always the first label", "lever": "scaffold"}),  # gen 2: a scaffold edit
            json.dumps({"edit": "retrieved-shots-2"}),
            json.dumps({"diagnosis": "always the first label", "lever": "weights"})]  # gen 3: an adapter
POLL_S = 0.5  # the page's poll interval: a new generation should show within a second or two
SPLITS = ("feedback", "selection", "test")


def browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium chromium-driver)")
    if not driver:
        pytest.skip("chromium-driver is not installed (Debian: apt-get install -y chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 3-generation `sia run` (policy alternate) on the tiny task: the reference agent,
    a scaffold rewrite with a diff, an adapter."""
    tmp = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp / "cache")))
        services_for = fake_services_for(tmp, lambda run_id: ([META_KEEP] * 3, FEEDBACK * 2))
        mp.setattr("sia.nodes.services.services_for", services_for)
        config = tmp / "config.json"
        config.write_text(fake_config(tmp).model_dump_json())
        assert main(["run", "--task-dir", str(make_tiny_task(tmp / "tiny")), "--generations", "3", "--policy",
                     "alternate", "--run-id", "r", "--config", str(config), "--runs-dir", str(tmp / "runs")]) == 0
        for svc in services_for.made.values():
            shutdown(svc)
    return tmp / "runs"


@pytest.fixture(scope="module")
def server(runs):
    """`sia web`'s app served by uvicorn on a free port, in a thread; yields its base URL."""
    import uvicorn

    from sia.cli.web import bind, create_app

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(runs, poll_s=POLL_S), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = browser_binaries()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1800",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # DevTools events: every request
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """URLs the page asked for since the last call (the performance log is drained by reading it)."""
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def arrived(driver, url: str) -> None:
    """Wait until a click's navigation has loaded `url` (a click can return before it has)."""
    WebDriverWait(driver, 10).until(lambda d: d.current_url == url and d.execute_script(
        "return document.readyState") == "complete", message=f"never reached {url}; at {driver.current_url}")


def chart_points(driver) -> dict[tuple[int, str], float]:
    return {(int(c.get_attribute("data-generation")), c.get_attribute("class").split()[1]):
            float(c.get_attribute("data-score")) for c in driver.find_elements(By.CSS_SELECTOR, "svg circle.point")}


def expected_points(gens: list[dict]) -> dict[tuple[int, str], float]:
    return {(g["generation"], s): pytest.approx(g[s], abs=1e-4) for g in gens for s in SPLITS if g[s] is not None}


def test_the_dashboard_shows_the_runs_numbers_chart_lineage_and_diff(runs, server, browser):
    gens = RunDB.read_generations(runs / "r" / "run.db", "r")
    assert [g["lever"] for g in gens] == ["meta", "scaffold", "weights"]
    browser.get(server + "/")
    row = browser.find_element(By.XPATH, "//tr[td/a[text()='r']]")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    tests = [g["test"] for g in gens if g["test"] is not None]
    best = max(g["selection"] for g in gens if g["accepted"])
    task = json.loads((runs / "r" / "inputs.json").read_text())["task"]  # the --task-dir path
    assert cells[:5] == ["r", task, "alternate", "finished", ""]  # run, task, policy, status, node in flight
    assert cells[5:] == [f"{len(gens)}/3", f"{best:.3f}", f"{tests[0]:.3f}", f"{tests[-1]:.3f}"]

    row.find_element(By.LINK_TEXT, "r").click()
    arrived(browser, server + "/run/r")
    assert chart_points(browser) == expected_points(gens)
    circle = browser.find_element(By.CSS_SELECTOR, "svg circle.point")
    assert circle.size["width"] > 0  # drawn, not only in the markup
    lineage = browser.find_element(By.XPATH, "//h2[text()='Lineage']/following-sibling::table[1]").text
    assert "2 scaffold gen 1 base accepted" in lineage and "3 weights gen 2 adapters/gen_3" in lineage

    browser.find_element(By.XPATH, "//table//a[text()='2']").click()
    arrived(browser, server + "/run/r/gen/2")
    diff = browser.find_element(By.CSS_SELECTOR, "pre.diff")
    added = [s.text for s in diff.find_elements(By.CSS_SELECTOR, "span.add")]
    assert added and "retrieved_shots" in " ".join(added)
    assert (runs / "r" / "gen_2" / "diff.patch").read_text().splitlines()[0] in diff.text

    browser.find_element(By.NAME, "wrong").click()  # the filter form, as a user submits it
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    arrived(browser, server + "/run/r/gen/2?split=feedback&wrong=1&gold=")
    assert browser.find_elements(By.CSS_SELECTOR, "tr.right") == []


def test_a_new_generation_appears_without_a_reload_and_nothing_else_is_asked_for(runs, server, browser):
    browser.get(server + "/run/r")
    requested_urls(browser)  # drain what came before
    browser.execute_script("window.__samePage = true;")  # gone if the page were reloaded
    gens = RunDB.read_generations(runs / "r" / "run.db", "r")
    db = RunDB(runs / "r" / "run.db")  # as the loop does, from another connection
    db.save_generation({"run_id": "r", "generation": 4, "lever": "scaffold", "adapter": None,
                        "scaffold_sha": gens[1]["scaffold_sha"], "feedback": 0.9, "selection": 0.95, "test": 0.85,
                        "accepted": 1, "p_value": 0.01, "note": "appended by the test"})
    db.db.conn.close()
    started = time.time()
    WebDriverWait(browser, 10, poll_frequency=0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "svg circle.point[data-generation='4']"))
    print(f"generation 4 appeared after {time.time() - started:.1f}s")
    assert browser.execute_script("return window.__samePage === true;")
    assert chart_points(browser) == expected_points(RunDB.read_generations(runs / "r" / "run.db", "r"))
    assert browser.find_elements(By.XPATH, "//table//a[@href='/run/r/gen/4']")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web_run_page.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot of the run page: {shot}")
    urls = requested_urls(browser)
    assert any(u.startswith(server + "/api/run/r/state") for u in urls)  # it polled
    assert urls and all(u.startswith(server + "/") for u in urls), urls


def test_the_report_file_opens_offline_with_its_chart(runs, browser, tmp_path):
    report = tmp_path / "report.html"
    assert main(["report", "r", "--runs-dir", str(runs), "-o", str(report)]) == 0
    browser.get("about:blank")  # the dashboard page stops polling
    requested_urls(browser)
    browser.get(report.as_uri())
    urls = requested_urls(browser)
    assert urls == [report.as_uri()], urls  # the file itself, nothing else
    assert chart_points(browser) == expected_points(RunDB.read_generations(runs / "r" / "run.db", "r"))
    width = browser.execute_script("return document.querySelector('svg').getBBox().width;")
    assert width > 100  # the SVG was laid out and drawn
