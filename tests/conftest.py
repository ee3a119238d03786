"""Fixtures shared across the test packages."""

import pytest


@pytest.fixture
def plant():
    """Write one bad-input probe at ``path``: bytes (the file's content), None (a folder where a file
    is expected), a callable (it writes the file itself), or "missing" (nothing at all)."""

    def _plant(path, content):
        if content is None:
            path.mkdir()
        elif callable(content):
            content(path)
        elif content != "missing":
            path.write_bytes(content)
        return path

    return _plant
