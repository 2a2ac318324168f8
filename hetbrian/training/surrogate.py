"""Backpropagation through time over neuronal parameters, with a surrogate gradient.

The network is the :class:`~hetbrian.training.twin.DifferentiableTwin` of a spec; the
trainer adds a linear readout and a loss, and Adam updates a flat parameter vector
``theta`` made of blocks:

- per-neuron parameters named in ``parameters``: time constants (any parameter in
  seconds) as :math:`\\log \\tau` (so they stay positive and a step is relative), the
  others as :math:`p / s_p` with :math:`s_p` the mean magnitude of the initial values
  (a threshold of -50 mV moves in steps of a fraction of 50 mV);
- optionally the input weights ``w_in_<c>`` (``input_weights=True``) and the recurrent
  weights (``recurrent_weights=True``), scaled the same way;
- the readout ``W, b`` (``train_readout=True``; otherwise it keeps its initial ridge
  fit).

Readout and losses. Features ``F`` (B sequences, T samples, ``n_features * N``) are
standardized with a mean and standard deviation fixed from the initial network, then
``y = ((F - mu) / sd) W + b`` at every sample from ``washout`` on:

- ``"mse"``: :math:`L = \\frac{1}{B T' n_{out}} \\sum (y - y^*)^2` for targets of shape
  (B, T, n_out);
- ``"cross_entropy"``: logits :math:`\\ell = \\frac{1}{T'} \\sum_t y_t` per sequence,
  :math:`L = -\\frac1B \\sum_b \\log \\mathrm{softmax}(\\ell_b)_{c_b}` for integer
  labels of shape (B,).

Adam (Kingma and Ba 2015): :math:`m \\leftarrow \\beta_1 m + (1 - \\beta_1) g`,
:math:`v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2`,
:math:`\\theta \\leftarrow \\theta - \\eta \\hat m / (\\sqrt{\\hat v} + \\epsilon)` with
bias-corrected :math:`\\hat m, \\hat v`; after each step time constants are clipped to
``tau_bounds``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
from brian2 import ms, second
from brian2.units.fundamentalunits import get_dimensions

from hetbrian.errors import DataError, ParameterError
from hetbrian.network import quantity_in
from hetbrian.stimuli import as_rng
from hetbrian.training.twin import DifferentiableTwin

__all__ = ["LOSSES", "Readout", "SurrogateGradientTrainer", "Adam"]

log = logging.getLogger(__name__)

#: Loss functions of :class:`SurrogateGradientTrainer`.
LOSSES = ("mse", "cross_entropy")


@dataclasses.dataclass
class Readout:
    """Linear readout on standardized features: ``((F - mean) / std) @ W + b``.

    Attributes
    ----------
    mean, std : ndarray, shape (n_columns,)
    weights : ndarray, shape (n_columns, n_outputs)
    bias : ndarray, shape (n_outputs,)
    """

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict(self, features):
        """Outputs for features of shape (..., n_columns)."""
        f = np.asarray(features, dtype=float)
        if f.shape[-1] != self.mean.size:
            raise DataError(
                f"features have {f.shape[-1]} columns; the readout has {self.mean.size}"
            )
        return ((f - self.mean) / self.std) @ self.weights + self.bias


class Adam:
    """Adam optimizer on a flat vector.

    Parameters
    ----------
    learning_rate : float
    beta1, beta2, eps : float
    """

    def __init__(self, learning_rate=1e-2, beta1=0.9, beta2=0.999, eps=1e-8):
        if not learning_rate > 0:
            raise ParameterError(f"learning_rate={learning_rate!r}; expected > 0")
        self.learning_rate = float(learning_rate)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = self.v = None
        self.t = 0

    def step(self, theta, grad):
        """Return the updated vector."""
        if self.m is None:
            self.m = np.zeros_like(theta)
            self.v = np.zeros_like(theta)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        return theta - self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclasses.dataclass
class _Block:
    name: str  # parameter name, "syn_w", "readout_W", "readout_b"
    size: int
    log: bool
    scale: float
    shape: tuple


class SurrogateGradientTrainer:
    """Train per-neuron parameters (and optionally weights) of a spec by BPTT.

    Parameters
    ----------
    spec : NetworkSpec
        The network (noise off); trained values write back into a copy of it.
    settings : SimulationSettings
    parameters : sequence of str
        Per-neuron parameters to train, names of the twin's ``parameter_names``
        (``"tau"``, ``"tau_m"``, ``"V_th"``, ...). Parameters in seconds are trained
        in log space.
    input_weights, recurrent_weights : bool
        Whether the input weights ``w_in_<c>`` and the recurrent weights are trained.
    train_readout : bool
        Whether the readout is trained (it is always initialised by ridge
        regression, or at zero for cross-entropy).
    n_outputs : int
        Readout outputs (targets per sample, or classes).
    loss : {"mse", "cross_entropy"}
    washout : int
        Leading readout samples left out of the loss.
    learning_rate : float
        Adam step size.
    tau_bounds : tuple of Quantity
        Time constants are clipped to this range after each step (default 1 ms to
        1 s; Perez-Nieves et al. 2021 clip to about 1.6-100 ms).
    stimulus_dt : Quantity, optional
        Step of the stimulus rows (default ``settings.dt``).
    surrogate : Surrogate, optional
    ridge : float
        Strength of the ridge fit that initialises the readout (standardized
        features).
    """

    def __init__(
        self,
        spec,
        settings,
        parameters=("tau",),
        *,
        input_weights=False,
        recurrent_weights=False,
        train_readout=True,
        n_outputs=1,
        loss="mse",
        washout=0,
        learning_rate=1e-2,
        tau_bounds=(1 * ms, 1 * second),
        stimulus_dt=None,
        surrogate=None,
        ridge=1e-3,
    ):
        self.twin = DifferentiableTwin(spec, settings, stimulus_dt, surrogate)
        if loss not in LOSSES:
            raise ParameterError(f"loss={loss!r}; expected one of {LOSSES}")
        if isinstance(parameters, str):
            parameters = (parameters,)
        for name in parameters:
            if name not in self.twin.parameter_names:
                raise ParameterError(
                    f"parameters names {name!r}; expected names among "
                    f"{self.twin.parameter_names}"
                )
        if not isinstance(n_outputs, int) or n_outputs < 1:
            raise ParameterError(f"n_outputs={n_outputs!r}; expected an integer >= 1")
        if not isinstance(washout, int) or washout < 0:
            raise ParameterError(f"washout={washout!r}; expected an integer >= 0")
        low, high = (float(quantity_in("tau_bounds", b, second)) for b in tau_bounds)
        if not 0 < low < high:
            raise ParameterError(f"tau_bounds={tau_bounds!r}; expected 0 < low < high")
        self.tau_bounds = (low, high)
        self.loss = loss
        self.washout = washout
        self.n_outputs = n_outputs
        self.train_readout = bool(train_readout)
        self.ridge = float(ridge)
        self.optimizer = Adam(learning_rate)
        self.history = []
        self.readout = None
        model = spec.model
        initial = self.twin.default_values()
        self._base = initial
        names = list(parameters)
        if input_weights:
            names += [f"w_in_{c}" for c in range(spec.n_inputs)]
        blocks, pieces = [], []
        n = spec.n_neurons
        for name in names:
            values = initial["parameters"][name]
            is_time = name in model.parameters and get_dimensions(
                model.parameter_unit(name)
            ) is get_dimensions(second)
            scale = 1.0 if is_time else _magnitude(values)
            blocks.append(_Block(name, n, is_time, scale, (n,)))
            pieces.append(np.log(values) if is_time else values / scale)
        if recurrent_weights and spec.has_synapses:
            w = initial["syn_w"]
            scale = _magnitude(w)
            blocks.append(_Block("syn_w", w.size, False, scale, w.shape))
            pieces.append(w / scale)
        self.blocks = blocks
        self.theta = np.concatenate(pieces) if pieces else np.zeros(0)
        self.n_network = self.theta.size

    # ---------------------------------------------------------------- parameters
    @property
    def n_trained(self):
        """Number of trained scalars (network and readout)."""
        extra = self.readout.weights.size + self.readout.bias.size
        return self.n_network + (extra if self.train_readout and self.readout else 0)

    def _unpack(self, theta):
        params, syn_w, offset = {}, None, 0
        for b in self.blocks:
            x = theta[offset : offset + b.size].reshape(b.shape)
            offset += b.size
            value = np.exp(x) if b.log else x * b.scale
            if b.name == "syn_w":
                syn_w = value
            else:
                params[b.name] = value
        return params, syn_w, offset

    def _pack_gradient(self, theta, grads):
        out, offset = [], 0
        for b in self.blocks:
            x = theta[offset : offset + b.size]
            offset += b.size
            g = grads["syn_w"] if b.name == "syn_w" else grads["parameters"][b.name]
            out.append(g * np.exp(x) if b.log else g * b.scale)
        return np.concatenate(out) if out else np.zeros(0)

    def network_values(self, theta=None):
        """Twin values (see :meth:`DifferentiableTwin.values`) for ``theta``."""
        theta = self.theta if theta is None else theta
        params, syn_w, _ = self._unpack(theta[: self.n_network])
        return self.twin.values(params, syn_w)

    def trained_parameters(self):
        """Trained per-neuron values (SI floats) and recurrent weights."""
        params, syn_w, _ = self._unpack(self.theta[: self.n_network])
        return params, syn_w

    def to_spec(self):
        """A copy of the spec with the trained values written back."""
        params, syn_w = self.trained_parameters()
        return self.twin.write_back(params, syn_w)

    def _clip(self, theta):
        theta = theta.copy()
        offset = 0
        low, high = np.log(self.tau_bounds[0]), np.log(self.tau_bounds[1])
        for b in self.blocks:
            if b.log:
                theta[offset : offset + b.size] = np.clip(
                    theta[offset : offset + b.size], low, high
                )
            offset += b.size
        return theta

    # ------------------------------------------------------------------- readout
    def _check_targets(self, run, targets):
        batch, n_samples, _ = run.features.shape
        if self.loss == "mse":
            y = np.asarray(targets, dtype=float)
            if y.ndim == 2:
                y = y[..., None]
            if y.shape != (batch, n_samples, self.n_outputs):
                raise DataError(
                    f"targets have shape {np.shape(targets)}; expected ({batch}, "
                    f"{n_samples}, {self.n_outputs}) (one row per readout sample)"
                )
            return y
        y = np.asarray(targets)
        if y.shape != (batch,) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"targets have shape {np.shape(targets)} and dtype {y.dtype}; "
                f"expected ({batch},) integer class labels"
            )
        if y.min() < 0 or y.max() >= self.n_outputs:
            raise DataError(f"labels outside 0..{self.n_outputs - 1}")
        return y

    def initialise_readout(self, stimuli, targets):
        """Standardization from the initial network, weights by ridge regression."""
        run = self.twin.forward(stimuli, self.network_values())
        y = self._check_targets(run, targets)
        f = run.features[:, self.washout :]
        flat = f.reshape(-1, f.shape[-1])
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x = (flat - mean) / std
        if self.loss == "mse":
            t = y[:, self.washout :].reshape(-1, self.n_outputs)
            xm, tm = x.mean(axis=0), t.mean(axis=0)
            xc = x - xm
            a = xc.T @ xc + self.ridge * x.shape[0] * np.eye(x.shape[1])
            w = np.linalg.solve(a, xc.T @ (t - tm))
            b = tm - xm @ w
        else:
            w = np.zeros((x.shape[1], self.n_outputs))
            b = np.zeros(self.n_outputs)
        self.readout = Readout(mean, std, w, b)
        if self.train_readout:
            self.theta = np.concatenate([self.theta[: self.n_network], w.ravel(), b])

    def _readout_from(self, theta):
        if not self.train_readout:
            return self.readout
        nf = self.readout.mean.size
        w = theta[self.n_network : self.n_network + nf * self.n_outputs]
        b = theta[self.n_network + nf * self.n_outputs :]
        return Readout(
            self.readout.mean, self.readout.std, w.reshape(nf, self.n_outputs), b
        )

    def _loss(self, features, y, readout):
        """Loss, dLoss/dfeatures and dLoss/d(W, b)."""
        f = features[:, self.washout :]
        x = (f - readout.mean) / readout.std
        out = x @ readout.weights + readout.bias
        if self.loss == "mse":
            err = out - y[:, self.washout :]
            loss = float(np.mean(err**2))
            d_out = 2.0 * err / err.size
        else:
            logits = out.mean(axis=1)
            shift = logits - logits.max(axis=1, keepdims=True)
            logp = shift - np.log(np.exp(shift).sum(axis=1, keepdims=True))
            batch = logits.shape[0]
            loss = float(-np.mean(logp[np.arange(batch), y]))
            d_logits = np.exp(logp)
            d_logits[np.arange(batch), y] -= 1.0
            d_logits /= batch
            d_out = np.repeat(d_logits[:, None, :], out.shape[1], axis=1) / out.shape[1]
        g_w = np.einsum("btf,bto->fo", x, d_out)
        g_b = d_out.sum(axis=(0, 1))
        d_x = d_out @ readout.weights.T
        d_features = np.zeros_like(features)
        d_features[:, self.washout :] = d_x / readout.std
        return loss, d_features, g_w, g_b

    # -------------------------------------------------------------------- training
    def loss_and_gradient(self, stimuli, targets, theta=None, smooth=False):
        """Loss and its gradient with respect to ``theta``.

        Parameters
        ----------
        stimuli : ndarray, shape (B, n_rows, K)
        targets : ndarray
            (B, n_samples, n_outputs) for ``"mse"``, (B,) labels for
            ``"cross_entropy"``.
        theta : ndarray, optional
            Default: the current vector.
        smooth : bool
            Forward pass with the smooth step (spiking models), so that the
            gradient is exact (see :mod:`hetbrian.training.twin`).

        Returns
        -------
        loss : float
        gradient : ndarray, the shape of ``theta``
        """
        if self.readout is None:
            self.initialise_readout(stimuli, targets)
        theta = self.theta if theta is None else np.asarray(theta, dtype=float)
        run = self.twin.forward(stimuli, self.network_values(theta), smooth=smooth)
        y = self._check_targets(run, targets)
        readout = self._readout_from(theta)
        loss, d_features, g_w, g_b = self._loss(run.features, y, readout)
        grads = self.twin.backward(run, d_features)
        parts = [self._pack_gradient(theta, grads)]
        if self.train_readout:
            parts += [g_w.ravel(), g_b]
        return loss, np.concatenate(parts)

    def fit(self, stimuli, targets, epochs=10, batch_size=8, rng=None):
        """Adam on mini-batches of sequences.

        Parameters
        ----------
        stimuli : ndarray, shape (n_sequences, n_rows, K)
        targets : ndarray
            One target array per sequence (see :meth:`loss_and_gradient`).
        epochs : int
        batch_size : int
        rng : numpy.random.Generator or int, optional
            Shuffles the sequences each epoch.

        Returns
        -------
        list of dict
            Per epoch: ``epoch``, ``loss`` (mean over batches), ``seconds``.
        """
        stimuli = np.asarray(stimuli, dtype=float)
        if stimuli.ndim != 3:
            raise DataError(
                f"stimuli have shape {stimuli.shape}; expected (n_sequences, n_rows, K)"
            )
        targets = np.asarray(targets)
        if len(targets) != len(stimuli):
            raise DataError(
                f"{len(targets)} targets for {len(stimuli)} stimulus sequences"
            )
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name}={value!r}; expected an integer >= 1")
        rng = as_rng(0 if rng is None else rng)
        if self.readout is None:
            self.initialise_readout(stimuli, targets)
        for epoch in range(epochs):
            t0 = time.perf_counter()
            order = rng.permutation(len(stimuli))
            losses = []
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss, grad = self.loss_and_gradient(stimuli[idx], targets[idx])
                if not np.all(np.isfinite(grad)):
                    raise DataError(
                        f"non-finite gradient in epoch {epoch}; lower the learning "
                        "rate or tighten tau_bounds"
                    )
                theta = self.optimizer.step(self.theta, grad)
                self.theta = self._clip(theta)
                losses.append(loss)
            record = {
                "epoch": len(self.history),
                "loss": float(np.mean(losses)),
                "seconds": time.perf_counter() - t0,
            }
            self.history.append(record)
            log.info("epoch %d: loss %.5g (%.2f s)", *record.values())
        if self.train_readout:
            self.readout = self._readout_from(self.theta)
        return self.history

    def score(self, stimuli, targets):
        """Loss of the current network and readout (hard threshold), no update."""
        if self.readout is None:
            raise ParameterError("score() before the readout exists; call fit()")
        run = self.twin.forward(stimuli, self.network_values())
        y = self._check_targets(run, targets)
        return self._loss(run.features, y, self._readout_from(self.theta))[0]

    def score_features(self, features, targets):
        """The same loss for features recorded elsewhere (a Brian2 run).

        Parameters
        ----------
        features : ndarray, shape (B, n_samples, n_columns)
            For example ``np.stack([brian_features.matrix()])``.
        targets : ndarray
        """
        f = np.asarray(features, dtype=float)
        if f.ndim == 2:
            f = f[None]
        fake = dataclasses.make_dataclass("_R", ["features"])(f)
        y = self._check_targets(fake, targets)
        return self._loss(f, y, self._readout_from(self.theta))[0]


def _magnitude(values):
    m = float(np.mean(np.abs(values))) if np.size(values) else 0.0
    return m if m > 0 and math.isfinite(m) else 1.0
