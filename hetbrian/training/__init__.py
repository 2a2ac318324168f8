"""Training of neuronal parameters: CMA-ES and a surrogate-gradient twin.

- :mod:`hetbrian.training.twin`: :class:`DifferentiableTwin`, the NumPy forward and
  backward pass generated from a spec's Brian2 equations (sympy derivatives of
  Brian2's own state update).
- :mod:`hetbrian.training.surrogate`: :class:`SurrogateGradientTrainer`, BPTT with
  Adam over per-neuron parameters and optionally weights.
- :mod:`hetbrian.training.cmaes`: :class:`CMAES` and :class:`ReservoirObjective`,
  gradient-free search over per-neuron log time constants, one batched simulation
  per generation, checkpointed.

See ``docs/training.md`` for the mathematics of both methods.
"""

from hetbrian.training.cmaes import (
    CMAES,
    HYPERPARAMETERS,
    CMAResult,
    ReservoirObjective,
)
from hetbrian.training.surrogate import (
    LOSSES,
    Adam,
    Readout,
    SurrogateGradientTrainer,
)
from hetbrian.training.twin import SURROGATES, DifferentiableTwin, Surrogate, TwinRun

__all__ = [
    "CMAES",
    "CMAResult",
    "HYPERPARAMETERS",
    "ReservoirObjective",
    "LOSSES",
    "Adam",
    "Readout",
    "SurrogateGradientTrainer",
    "SURROGATES",
    "DifferentiableTwin",
    "Surrogate",
    "TwinRun",
]
