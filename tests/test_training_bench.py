"""The training benchmark: the snnTorch comparison, measured or not measured."""

import os

import pytest

from hetbrian.bench import training


def test_missing_interpreter_gives_a_reason(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-python"
    monkeypatch.setenv(training.SNNTORCH_PYTHON_VARIABLE, str(missing))
    python, reason = training._snntorch_python(None)
    assert python is None
    assert str(missing) in reason and "not an executable" in reason


def test_interpreter_without_torch_gives_a_reason(tmp_path):
    # a Python that fails the script's imports stands for one without torch
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\necho \'{"missing": "No module named torch"}\'\nexit 3\n'
    )
    fake.chmod(0o755)
    python, reason = training._snntorch_python(str(fake))
    assert python == str(fake) and reason is None
    spec, settings, u, y = training._lif_problem(8, 20, 2)
    trainer = training.SurrogateGradientTrainer(spec, settings, ("tau_m",))
    result, reason = training._snntorch_epoch(str(fake), trainer, u, y, 2, 1, 1)
    assert result is None
    assert "lacks torch or snntorch" in reason and "No module named torch" in reason


@pytest.mark.slow
def test_run_reports_not_measured_with_a_missing_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv(training.SNNTORCH_PYTHON_VARIABLE, str(tmp_path / "absent"))
    result = training.run(quick=True, repeats=1)
    assert result["figures"]["surrogate_seconds_per_epoch"] > 0
    assert not any("snntorch" in key for key in result["figures"])
    (note,) = [n for n in result["notes"] if n.startswith("snnTorch comparison")]
    assert "not measured" in note and "absent" in note


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get(training.SNNTORCH_PYTHON_VARIABLE),
    reason=f"{training.SNNTORCH_PYTHON_VARIABLE} is unset (a Python with torch and "
    "snntorch; see docs/training.md, section Cost)",
)
def test_measured_path_returns_positive_times():
    result = training.run(quick=True, repeats=1)
    figures = result["figures"]
    assert not [n for n in result["notes"] if n.startswith("snnTorch")], result["notes"]
    for suffix in ("", "_float32"):
        assert figures[f"snntorch_seconds_per_epoch{suffix}"] > 0
        assert figures[f"ratio_twin_over_snntorch{suffix}"] > 0
        # the same network: firing rates agree to a quarter (no refractoriness in
        # snnTorch's Leaky raises its rate a little)
        rate = figures[f"snntorch_initial_rate_hz{suffix}"]
        assert rate == pytest.approx(figures["twin_initial_rate_hz"], rel=0.25)
    assert result["environment"]["torch"]
    assert result["environment"]["torch_threads"].startswith("1 intra-op")
