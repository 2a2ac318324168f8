"""Mechanisms: dimensionality of the network state and its alignment with targets."""

from __future__ import annotations

import numpy as np

from hetbrian.errors import DataError

__all__ = ["participation_ratio", "target_alignment"]


def _centred(states, name="states"):
    x = np.asarray(states, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"{name} has shape {x.shape}; expected (n_samples >= 2, n)")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} contains NaN or inf")
    return x - x.mean(axis=0)


def _principal(x):
    """Eigenvalues (descending) and eigenvectors of ``x.T @ x`` for centred ``x``.

    For tall matrices (more samples than neurons, the usual case) the eigenvalue
    problem of the small Gram matrix is far cheaper than an SVD of ``x``; the leading
    directions that the analysis uses are well conditioned either way.
    """
    if x.shape[0] >= x.shape[1]:
        lam, vectors = np.linalg.eigh(x.T @ x)
        order = np.argsort(lam)[::-1]
        return np.clip(lam[order], 0, None), vectors[:, order]
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return s**2, vt.T


def participation_ratio(states):
    r"""Participation ratio of the state covariance.

    .. math:: PR = \frac{(\sum_i \lambda_i)^2}{\sum_i \lambda_i^2}

    with :math:`\lambda_i` the eigenvalues of the covariance of ``states`` (one row
    per time sample). PR is 1 when one direction carries all variance and ``n`` when
    ``n`` directions carry equal variance.

    Parameters
    ----------
    states : array_like, shape (n_samples, n_neurons)

    Returns
    -------
    float
    """
    lam, _ = _principal(_centred(states))
    return _ratio(lam)


def _ratio(lam):
    total = lam.sum()
    return float(total**2 / np.sum(lam**2)) if total > 0 else 0.0


def target_alignment(states, targets, n_components=None):
    r"""Fraction of each target's variance in the leading principal subspace of states.

    With :math:`U_k` the first :math:`k` principal directions (in sample space) of the
    centred ``states`` and :math:`y` a centred target,

    .. math:: A(y) = \frac{\lVert U_k^\top y \rVert^2}{\lVert y \rVert^2}.

    ``k`` defaults to the participation ratio rounded up: the alignment then asks
    whether the few directions in which the network actually varies are the ones the
    tasks need, independently of how many directions there are.

    Parameters
    ----------
    states : array_like, shape (n_samples, n_neurons)
    targets : array_like, shape (n_samples, n_tasks)
    n_components : int, optional
        Size ``k`` of the principal subspace.

    Returns
    -------
    ndarray, shape (n_tasks,)
        Values in [0, 1]; NaN for a constant target.
    """
    x = _centred(states)
    y = _centred(targets, "targets")
    if y.shape[0] != x.shape[0]:
        raise DataError(
            f"targets has {y.shape[0]} rows and states {x.shape[0]}; expected equal"
        )
    lam, vectors = _principal(x)
    if n_components is None:
        n_components = int(np.ceil(_ratio(lam)))
    rank = int(np.sum(lam > lam[0] * 1e-24)) if lam[0] > 0 else 0
    k = max(1, min(int(n_components), rank))
    # U_k = x V_k / s_k, so U_k^T y = V_k^T (x^T y) / s_k
    projection = (vectors[:, :k].T @ (x.T @ y)) / np.sqrt(lam[:k])[:, None]
    norm = np.sum(y**2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.sum(projection**2, axis=0) / norm, np.nan)
