"""A real headless Chromium (Debian's ``chromium``) driven by selenium through Debian's ``chromium-driver``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    exe, driver = shutil.which("chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if exe is None or not Path(driver).is_file():
        pytest.fail("chromium / chromium-driver missing: run `apt-get install -y chromium chromium-driver` "
                    "(make test installs them)", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
              f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_script_timeout(30)
    yield d
    d.quit()
