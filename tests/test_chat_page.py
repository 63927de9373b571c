"""The chat page at ``/`` of ``edge-rt serve`` in a real headless browser (Debian's chromium driven
by chromedriver through selenium): type a prompt, watch the reply stream in, press Stop (the server
cancels the generation), then a complete reply with its tokens/s."""

from __future__ import annotations

import re
import shutil

import pytest

from helpers import requires_system_tool
from server_process import DEFAULT_MODEL, ServerProcess

webdriver = pytest.importorskip("selenium.webdriver")
httpx = pytest.importorskip("httpx")


@pytest.fixture()
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _cancelled(url: str) -> float:
    m = re.search(r'^edge_rt_generations_total\{outcome="cancelled"\} (\S+)$', httpx.get(url + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


@requires_system_tool("chromium", "chromedriver")
def test_chat_page_streams_a_reply_and_stops_it(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # A streaming budget and a long context keep the first reply going long enough to stop it.
    with ServerProcess(DEFAULT_MODEL, "--ctx", "1024", "--mem-budget", "12MB") as s:
        browser.get(s.url + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.05)
        wait.until(lambda d: "memory" in d.find_element(By.ID, "status").text)
        assert "default" in browser.find_element(By.ID, "model").text

        def set_field(field_id: str, value: str) -> None:
            field = browser.find_element(By.ID, field_id)
            field.clear()
            field.send_keys(value)

        set_field("max_tokens", "900")
        set_field("temperature", "1.5")
        set_field("seed", "1")  # with this seed the reply runs to max_tokens (checked: no early end of text)
        browser.find_element(By.ID, "prompt").send_keys("class Parser:", Keys.ENTER)
        reply = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))[-1]

        def text() -> str:
            return reply.get_attribute("textContent")

        wait.until(lambda d: len(text()) > 0 and reply.get_attribute("data-state") == "streaming")
        first_seen = text()
        wait.until(lambda d: len(text()) > len(first_seen))  # more text arrives: it streams
        assert reply.get_attribute("data-state") == "streaming"
        browser.find_element(By.ID, "stop").click()
        wait.until(lambda d: reply.get_attribute("data-state") == "stopped")
        assert text().endswith("[stopped]")
        wait.until(lambda d: _cancelled(s.url) == 1)  # the server stopped generating
        assert browser.find_element(By.ID, "send").is_enabled()

        set_field("max_tokens", "12")
        browser.find_element(By.ID, "prompt").send_keys("def main():", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 2)
        second = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        wait.until(lambda d: second.get_attribute("data-state") == "done")
        assert re.search(r"\d+ tokens, [0-9.]+ tok/s", browser.find_element(By.ID, "stats").text)
        assert "memory" in browser.find_element(By.ID, "status").text
