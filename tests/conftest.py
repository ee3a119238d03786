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


@pytest.fixture
def killed_at(monkeypatch):
    """``killed_at(cls, method, when, run, exc=KeyboardInterrupt)``: call ``run()`` with ``cls.method`` raising
    ``exc`` when it is called for step/round ``when`` (a kill mid-run), expect that exception, then put the
    real method back so the test can resume the run."""

    def _killed_at(cls, method: str, when: int, run, exc=KeyboardInterrupt):
        real = getattr(cls, method)

        def dying(self, i, *args, **kwargs):
            if i == when:
                raise exc("killed")
            return real(self, i, *args, **kwargs)

        monkeypatch.setattr(cls, method, dying)
        try:
            with pytest.raises(exc):
                run()
        finally:
            monkeypatch.setattr(cls, method, real)

    return _killed_at
