"""The UI under test: ``tunesmith ui`` started as a user starts it (a subprocess printing its URL), and the
screenshots docs/ui.md shows."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

# docs/ui/ is rewritten only on request (TUNESMITH_UI_SHOTS=1 make test, or pytest tests/ui): a plain test run
# takes the same screenshots into a temporary folder, so it never changes files of the checkout.
DOCS = (Path(__file__).resolve().parents[2] / "docs" / "ui" if os.environ.get("TUNESMITH_UI_SHOTS")
        else Path(os.environ.get("TMPDIR", "/tmp")) / f"tunesmith-ui-shots-{os.getpid()}")


class UiProcess:
    """``tunesmith ui --port 0 --workspace W``; ``url`` is the printed one, token included."""

    def __init__(self, workspace: Path, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "ui", "--port", "0", "--workspace",
                                      str(workspace)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "TUNESMITH_API_KEY": "", **(env or {})})
        self.lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if m := re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line):
                self.base, self.token = m.group(1), m.group(2)
                self.url = f"{self.base}/?token={self.token}"
                return
        raise AssertionError("tunesmith ui did not print its URL: " + "".join(self.lines))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def shot(driver, name: str) -> None:
    """A PNG of the whole page for docs/ui.md (the page's full height, not just the window)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.body.scrollHeight + 20, 2400)")
    driver.set_window_size(1280, max(700, height))
    driver.save_screenshot(str(DOCS / f"{name}.png"))
    driver.set_window_size(1280, 1000)
