"""State dimensionality and target alignment."""

import numpy as np
import pytest

from hetbrian.analysis import participation_ratio, target_alignment
from hetbrian.errors import DataError


def test_participation_ratio_of_known_spectra():
    rng = np.random.default_rng(0)
    isotropic = rng.standard_normal((20_000, 10))
    assert participation_ratio(isotropic) == pytest.approx(10, rel=0.02)
    rank_one = np.outer(rng.standard_normal(500), rng.standard_normal(8))
    assert participation_ratio(rank_one) == pytest.approx(1.0, rel=1e-9)
    # two directions with variances 4 and 1: (4 + 1)^2 / (16 + 1)
    two = np.column_stack(
        [2 * rng.standard_normal(50_000), rng.standard_normal(50_000)]
    )
    assert participation_ratio(two) == pytest.approx(25 / 17, rel=0.02)


def test_alignment_equals_projection_on_leading_singular_vectors():
    rng = np.random.default_rng(1)
    states = rng.standard_normal((400, 30)) @ rng.standard_normal((30, 30))
    targets = rng.standard_normal((400, 5))
    targets[:, 0] = states @ rng.standard_normal(30)
    centred = states - states.mean(axis=0)
    u, _, _ = np.linalg.svd(centred, full_matrices=False)
    yc = targets - targets.mean(axis=0)
    for k in (1, 3, 30):
        expected = np.sum((u[:, :k].T @ yc) ** 2, axis=0) / np.sum(yc**2, axis=0)
        np.testing.assert_allclose(
            target_alignment(states, targets, k), expected, rtol=1e-8, atol=1e-12
        )
    assert target_alignment(states, targets, 30)[0] == pytest.approx(1.0)


def test_alignment_is_one_along_and_zero_across_the_state():
    t = np.linspace(0, 20, 2000)
    states = np.column_stack([np.sin(t), 1e-3 * np.cos(3 * t)])
    targets = np.column_stack([2 * np.sin(t), np.cos(3 * t), np.ones_like(t)])
    alignment = target_alignment(states, targets, n_components=1)
    assert alignment[0] == pytest.approx(1.0, abs=1e-6)
    assert alignment[1] == pytest.approx(0.0, abs=1e-3)
    assert np.isnan(alignment[2])  # a constant target has no variance to explain


def test_bad_states():
    with pytest.raises(DataError, match="NaN"):
        participation_ratio(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(DataError, match="rows"):
        target_alignment(np.ones((10, 2)), np.ones((9, 1)))
