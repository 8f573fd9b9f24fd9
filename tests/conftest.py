"""Shared test configuration: makes the helpers in ``tests/support/`` importable as ``support.<module>``.

pytest runs with ``--import-mode=importlib`` (pyproject addopts), which puts no test directory on
``sys.path``; this puts ``tests/`` there once.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
