"""Terminal output: tables never print nan; third-party noise is off inside our calls only."""

import warnings

from paretoalign.console import VERBOSE_ENV, quiet_third_party, table


def test_table_prints_non_finite_floats_as_n_a():
    out = table(["objective", "accuracy"], [["a", 0.5], ["b", float("nan")], ["c", float("inf")]])
    assert "nan" not in out and "inf" not in out
    assert out.splitlines()[3].split() == ["b", "n/a"] and out.splitlines()[2].split() == ["a", "0.500"]


def test_quiet_third_party_is_scoped_and_verbose_turns_it_off(monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_third_party():
            assert not hf_logging.is_progress_bar_enabled()
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning, stacklevel=1)
            warnings.warn("something else", FutureWarning, stacklevel=1)  # unknown warnings still show
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning, stacklevel=1)
    assert hf_logging.is_progress_bar_enabled()  # restored
    assert [str(w.message) for w in caught] == ["something else",
                                                 "`is_gradient_checkpointing` is deprecated and will be removed"]
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with quiet_third_party():
        assert hf_logging.is_progress_bar_enabled()


def test_deepspeed_cpu_notice_dropped_from_its_logger_unless_verbose(monkeypatch):
    import logging

    from paretoalign.console import DEEPSPEED_CPU_NOTICE, VERBOSE_ENV, _DropNotice, quiet_deepspeed_cpu_notice

    ds = logging.getLogger("DeepSpeed")
    for f in [f for f in ds.filters if isinstance(f, _DropNotice)]:
        ds.removeFilter(f)

    def record(msg):
        return logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, msg, None, None)

    monkeypatch.setenv(VERBOSE_ENV, "1")
    quiet_deepspeed_cpu_notice()
    assert ds.filter(record(f"{DEEPSPEED_CPU_NOTICE}. If you have GPU ..."))  # --verbose: every message
    monkeypatch.delenv(VERBOSE_ENV)
    quiet_deepspeed_cpu_notice()
    quiet_deepspeed_cpu_notice()  # once only
    assert sum(isinstance(f, _DropNotice) for f in ds.filters) == 1
    assert not ds.filter(record(f"{DEEPSPEED_CPU_NOTICE}. If you have GPU or other accelerator, we were unable to detect it."))
    assert ds.filter(record("ZeRO stage 3 initialised"))  # DeepSpeed's other messages pass
