"""Fixtures for the synth tests: the fault-injecting fake teacher and a real `tunesmith serve`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Reuse the serve tests' in-process server helper (uvicorn in a thread on a free port).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from fake_teacher import FakeTeacher  # noqa: E402


@pytest.fixture
def fake():
    t = FakeTeacher()
    yield t
    t.close()


@pytest.fixture(scope="session")
def served(embedded_dir):
    """`tunesmith serve` on the embedded model, as a teacher."""
    from serve_helpers import Running

    from tunesmith.serve import ServeConfig

    s = Running(ServeConfig(model=str(embedded_dir), served_name="smollm2", max_batch=8))
    yield s
    s.close()
