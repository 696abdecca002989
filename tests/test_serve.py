"""`lora-tui serve`: the wizard in a browser (textual-serve), opened in headless Chromium.

The browser is Debian's `chromium` (`make browser` installs it; Playwright's own browser download is
not reachable), driven by Playwright. textual-serve draws the terminal with xterm.js on a canvas, so
the page has no text to read: the test catches the xterm `Terminal` object as the page creates it
and reads the screen from its buffer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tui.serve import exposure_warning, is_loopback

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "screenshots" / "10-browser.png"
RTX_4090 = ROOT / "tests" / "hardware" / "rtx4090.json"

# Runs before the page's own scripts: textual-serve's client does `this.terminal = new Terminal(...)`;
# an accessor on Object.prototype sees that assignment, keeps the terminal, and steps aside.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'terminal', {
  configurable: true,
  set(value) {
    Object.defineProperty(this, 'terminal', {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && !window.__xterm) window.__xterm = value;
  },
});
"""
READ_SCREEN = """() => {
  const term = window.__xterm;
  if (!term) return '';
  const buffer = term.buffer.active, lines = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.viewportY + y);
    lines.push(line ? line.translateToString(true) : '');
  }
  return lines.join('\\n');
}"""


def _env(tmp_path: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), LORA_TUI_STATE=str(tmp_path / "state"),
                LORA_TUI_HARDWARE=str(RTX_4090), PYTHONUNBUFFERED="1")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _chromium() -> str:
    """Debian's chromium, installed through `make browser` when missing; skip only if that cannot be done."""
    if not CHROMIUM.exists():
        attempt = subprocess.run(["make", "-s", "browser"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        if not CHROMIUM.exists():
            said = (attempt.stdout + attempt.stderr).strip().splitlines()
            pytest.skip(f"{CHROMIUM} is missing and `make browser` could not install it: {said[-1] if said else 'no output'}")
    return str(CHROMIUM)


def _wait_for_port(port: int, server: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"lora-tui serve exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"lora-tui serve did not listen on port {port} within {timeout:.0f} s")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _wait_for_text(page, wanted: list[str], timeout: float, unless: str | None = None) -> str:
    """The terminal's screen once it shows every string in `wanted` (and not `unless`)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = page.evaluate(READ_SCREEN)
        if all(text in screen for text in wanted) and not (unless and unless in screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"the browser's terminal never showed {wanted}; it shows:\n{screen}")


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_wizard_in_chromium_shows_hardware_then_model(tmp_path):
    chromium = _chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is a dev dependency: pip install -e '.[dev]'")
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([sys.executable, "-m", "tui.cli", "serve", "--port", str(port)], cwd=tmp_path,
                                  env=_env(tmp_path), stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # its group holds the wizard processes it starts
    try:
        _wait_for_port(port, server, log)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 720})
                page.add_init_script(CATCH_TERMINAL)
                page.route("**/fonts.googleapis.com/**", lambda route: route.abort())  # no internet; don't wait for it
                # The landing page: with ?delay textual-serve waits for a click on Start (without it, it connects on load).
                page.goto(f"http://127.0.0.1:{port}/?delay=1")
                page.click("#start")
                page.wait_for_load_state()
                # The hardware step, settled: the (fake) GPU found and the catalogue read.
                hardware = _wait_for_text(page, ["1 Hardware", "What this machine has", "RTX 4090", "Estimates will be measured against"],
                                          timeout=60)
                assert "Continue where you left off" not in hardware  # own, empty state folder
                page.screenshot(path=str(SCREENSHOT))  # the README's picture
                page.locator("#terminal").click()
                page.keyboard.press("Control+n")
                model = _wait_for_text(page, ["Model", "Type a Hugging Face id"], timeout=30)
                assert "What this machine has" not in model
                # Stopped with the tab still open, the server ends the tab's wizard too.
                wizards = psutil.Process(server.pid).children(recursive=True)
                assert any("tui.cli" in _command_line(w) for w in wizards)
                server.send_signal(signal.SIGTERM)
                assert server.wait(timeout=30) == 0, log.read_text()[-2000:]
                left = [w.pid for w in wizards if _alive(w)]
                assert left == [], f"wizard processes left running after the server stopped: {left}"
            finally:
                browser.close()
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # whatever is left of its group
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    assert SCREENSHOT.stat().st_size > 10_000


def test_localhost_is_quiet_and_anything_else_says_who_controls_training():
    for host in ("127.0.0.1", "localhost", "::1"):
        assert is_loopback(host) and exposure_warning(host, 8000) is None
    warning = exposure_warning("0.0.0.0", 8000)
    assert warning and "anyone who can reach this port controls training on this machine" in warning
    assert warning.count(". ") == 0 and warning.endswith(".")  # one sentence


def test_serving_on_all_interfaces_warns_and_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tui.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
                                cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("lora-tui serve: listening on 0.0.0.0") and "controls training" in lines[0]
    assert lines[-1].startswith(f"lora-tui: cannot listen on 0.0.0.0:{port}") and "Traceback" not in result.stderr
