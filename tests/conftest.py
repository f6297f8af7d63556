"""Shared by every test folder (tests/ mirrors the package: lobes/, data/, ...).

* ``tiny_datasets`` (tests/tiny_datasets.py) is importable from any test file;
* the ``slow`` marker: tests that train a recipe, run the demo or spawn processes.
  ``make test`` runs everything; ``pytest -m "not slow"`` leaves them out.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a recipe, runs the demo or spawns processes (seconds to minutes)")
