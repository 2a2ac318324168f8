"""Equation-level models: declarations, units and user-written equations."""

import brian2
import pytest
from brian2 import ms, mV

from hetbrian.errors import ParameterError, UnitError
from hetbrian.models import (
    adaptive_lif_model,
    custom_model,
    lif_exp_synapse_model,
    lif_model,
    rate_model,
)

ALL_MODELS = [
    rate_model("tanh"),
    rate_model("sigmoid"),
    rate_model("relu"),
    lif_model(),
    lif_exp_synapse_model(),
    adaptive_lif_model(),
]


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.name)
def test_parameters_are_constant_and_have_units(model):
    eqs = brian2.Equations(model.equation_text(noise=True))
    for name, default in model.parameters.items():
        assert "constant" in eqs[name].flags
        assert eqs[name].dim == brian2.get_dimensions(default)
    assert "xi" in eqs.identifiers or "xi" in str(eqs)
    assert "xi" not in model.equation_text(noise=False)
    assert model.references


def test_overriding_defaults():
    model = lif_model(tau_m=10 * ms, V_th=-55 * mV)
    assert model.parameters["tau_m"] == 10 * ms
    with pytest.raises(ParameterError, match="tau_x"):
        lif_model(tau_x=3 * ms)
    with pytest.raises(UnitError, match="tau_m"):
        lif_model(tau_m=-55 * mV)
    with pytest.raises(ParameterError, match="transfer='softmax'"):
        rate_model("softmax")


def test_custom_model_checks_declarations():
    base = dict(
        kind="rate",
        input_unit=1,
        weight_unit=1,
        synapse_summed="w*r_pre",
        features={"rate": "r"},
    )
    eqs = """
    dv/dt = (-v + I_rec + I_ext)/tau {noise} : 1
    r = v**2 : 1
    I_rec : 1
    tau : second (constant)
    """
    assert custom_model("sq", eqs, {"tau": 5 * ms}, **base).name == "sq"
    with pytest.raises(ParameterError, match="'gain' .* not declared"):
        custom_model("sq", eqs, {"tau": 5 * ms, "gain": 1.0}, **base)
    with pytest.raises(ParameterError, match="do not use I_ext"):
        custom_model("sq", eqs.replace("I_ext", "0"), {"tau": 5 * ms}, **base)
    with pytest.raises(ParameterError, match="records 'q'"):
        custom_model("sq", eqs, {"tau": 5 * ms}, **{**base, "features": {"q": "q"}})
