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


@pytest.fixture
def fresh_accelerate_state():
    """accelerate fixes the precision for the whole process at the first Accelerator: start clean, leave clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def one_update(tmp_path):
    """``one_update(config, name, **overrides)``: an OnlineTrainer from ``config`` (a dict of OnlineConfig fields)
    with ``overrides`` under ``tmp_path/name``, one rollout (seed 0) and one update; returns (trainer, metrics
    row, the trainable parameters after the update)."""

    def _one_update(config: dict, name: str, **overrides):
        import torch

        from paretoalign.trainers.online_config import OnlineConfig
        from paretoalign.trainers.online_trainer import OnlineTrainer

        trainer = OnlineTrainer(OnlineConfig(**{**config, **overrides}, output_dir=str(tmp_path / name)))
        torch.manual_seed(0)
        rollout, scores, valid, _ = trainer.rollout(1)
        row = trainer.update(rollout, scores, valid)
        params = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}
        return trainer, row, params

    return _one_update
