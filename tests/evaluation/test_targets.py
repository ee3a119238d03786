"""A base model's files are hashed once per process (evaluating a run fingerprints its base twice)."""

import hashlib
import os

from paretoalign.evaluation import targets as tg
from paretoalign.models import build_tiny_model, build_tiny_tokenizer


def test_base_model_is_hashed_once_per_process_and_the_fingerprint_is_unchanged(tmp_path, monkeypatch):
    base = tmp_path / "base"
    build_tiny_model(build_tiny_tokenizer(), seed=3).save_pretrained(base)
    adapter = tmp_path / "run" / "final" / "policy"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")

    calls = []
    real = tg._hash_files
    monkeypatch.setattr(tg, "_hash_files", lambda folder, h: calls.append(folder.name) or real(folder, h))
    monkeypatch.setattr(tg, "_FOLDER_DIGESTS", {})
    h = hashlib.sha256()
    real(base, h)
    want = h.hexdigest()  # the uncached fingerprint, as before the cache

    run = tg.Target("run", str(tmp_path / "run"), str(base), adapter, tmp_path / "run", {"seed": 0})
    fp_run = tg.target_fingerprint(run)  # hashes the adapter and the base
    assert tg.target_fingerprint(tg.resolve_target(str(base))) == want  # the baseline: the base again, cached
    assert tg.target_fingerprint(run) == fp_run
    assert calls.count("base") == 1 and calls.count("policy") == 2

    weights = base / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    assert tg.model_fingerprint(str(base)) == want and calls.count("base") == 2
