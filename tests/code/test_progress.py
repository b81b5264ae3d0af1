"""Progress bars (acneops.core.progress): the terminal / log policy, and the bars the audit and feature
extraction show on stderr, named by stage and class (the sort, synthesize and evaluate stages are checked
in their own test files)."""

from __future__ import annotations

import numpy as np
import pytest

from acneops.core.errors import AcneopsError
from acneops.core.progress import LOG_INTERVAL_S, progress

LOUD = {"TQDM_DELAY": "0", "TQDM_MININTERVAL": "0"}  # log every update, so short test loops show


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key in ("TQDM_DISABLE", "TQDM_DELAY", "TQDM_MININTERVAL", "TQDM_LEAVE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_off_a_terminal_bars_stay_on_but_log_only_slow_loops(monkeypatch, capsys) -> None:
    _env(monkeypatch)
    with progress(range(3), desc="sort: generate", leave=False) as bar:
        assert (bar.mininterval, bar.delay, bar.leave, bar.disable) == (LOG_INTERVAL_S, LOG_INTERVAL_S, True, False)
        assert list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # a 3-item loop finishes long before the first log line is due


def test_on_a_terminal_bars_redraw_live(monkeypatch) -> None:
    _env(monkeypatch)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    with progress(total=2, desc="x", leave=False) as bar:
        assert (bar.mininterval, bar.delay, bar.leave) == (0.1, 0, False)


def test_the_users_tqdm_environment_wins(monkeypatch, capsys) -> None:
    _env(monkeypatch, TQDM_DISABLE="1")
    with progress(range(2), desc="x") as bar:
        assert bar.disable
    _env(monkeypatch, **LOUD)
    for _ in progress(range(4), desc="audit synthesize_mild: features (synthetic)", unit="img"):
        pass
    err = capsys.readouterr().err
    assert "audit synthesize_mild: features (synthetic)" in err and "4/4" in err  # stderr, final line kept
    _env(monkeypatch, TQDM_DELAY="soon")
    with pytest.raises(AcneopsError, match="TQDM_DELAY='soon': expected seconds"):
        progress(range(2), desc="x")


def test_audit_shows_its_phases_and_each_feature_extraction_by_name(monkeypatch, capsys) -> None:
    from acneops.audit import AuditConfig, run_audit
    from acneops.features.extractors import get_extractor

    _env(monkeypatch, **LOUD)
    rng = np.random.default_rng(0)
    syn, train, test = (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8) for n in (6, 8, 5))
    run_audit(syn, train, AuditConfig(crop_scales=(), ct_cells=2), get_extractor("tiny", seed=0), test,
              name="evaluate_mild")
    err = capsys.readouterr().err
    for part in ("(synthetic)", "(real train)", "(real train, mirrored)", "(real test)"):
        assert f"audit evaluate_mild: features {part}" in err
    assert "audit evaluate_mild: 100%" in err and "6/6" in err and "membership done" in err


def test_feature_extraction_names_its_bar(monkeypatch, capsys) -> None:
    from acneops.features.extractors import get_extractor

    _env(monkeypatch, **LOUD)
    images = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    get_extractor("tiny", seed=0).extract(images, batch_size=2, desc="evaluate mild: features (synthetic)")
    get_extractor("tiny", seed=0).extract(images, progress=False, desc="silent")
    err = capsys.readouterr().err
    assert "evaluate mild: features (synthetic)" in err and "3/3" in err and "silent" not in err
