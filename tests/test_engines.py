"""Engines: runtime against standalone, reruns without recompiling, the build cache."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from brian2 import ms, mV, nA, prefs

from hetbrian.engines import ENGINES, get_engine, gpu_available
from hetbrian.errors import EngineError, ParameterError, SpecError, UnitError
from hetbrian.heterogeneity import LogNormal
from hetbrian.models import lif_model, rate_model
from hetbrian.network import Connectivity, ReservoirConfig, SimulationSettings, batch

DT = 0.1 * ms
N_STEPS = 1000  # 100 ms of stimulus
RATE_SETTINGS = SimulationSettings(dt=DT, readout_dt=1 * ms, features=("rate", "v"))
LIF_SETTINGS = SimulationSettings(dt=DT, readout_dt=1 * ms, features=("spikes", "v"))

needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="no C++ compiler on the PATH",
)


def rate_config(seed=3, cv=0.5, n=30, noise=0.0):
    tau = LogNormal(mean=20 * ms, cv=cv, lower=DT) if cv else 20 * ms
    return ReservoirConfig(
        model=rate_model("tanh"),
        n_neurons=n,
        n_inputs=2,
        heterogeneity={"tau": tau},
        connectivity=Connectivity(p=0.2, gain=1.5),
        input_bias=0.1,
        noise=noise,
        seed=seed,
    )


def lif_config(cv, seed=5, n=40):
    tau = LogNormal(mean=20 * ms, cv=cv, lower=1 * ms) if cv else 20 * ms
    return ReservoirConfig(
        model=lif_model(),
        n_neurons=n,
        n_inputs=2,
        heterogeneity={"tau_m": tau},
        connectivity=Connectivity(p=0.2, gain=1.5 * mV),
        input_gain=0.5 * nA,
        input_bias=0.2 * nA,
        seed=seed,
    )


def stimulus(seed=0, n_steps=N_STEPS):
    t = np.arange(n_steps)[:, None] * float(DT)
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(
        np.sin(2 * np.pi * 7 * t + rng.uniform(0, np.pi, 2))
        + 0.3 * rng.standard_normal((n_steps, 2))
    )


def runtime_features(spec, stim, settings):
    return get_engine("runtime").simulate(spec, stim, settings)


# --- errors, before anything is simulated -----------------------------------------


def test_unknown_engine_name_lists_the_known_ones():
    with pytest.raises(ParameterError, match="'cpp'.*cpp_standalone"):
        get_engine("cpp")
    with pytest.warns(UserWarning, match="ignores threads"):
        get_engine("runtime", threads=2)
    assert set(ENGINES) == {"runtime", "cython", "cpp_standalone", "cuda_standalone"}


def test_cuda_engine_without_brian2cuda_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "brian2cuda", None)  # import now fails
    with pytest.raises(EngineError, match=r"hetbrian\[cuda\]"):
        get_engine("cuda_standalone")


def test_make_jobs_never_exceed_the_cores():
    cores = os.cpu_count()
    assert get_engine("cpp_standalone", make_jobs=10 * cores).make_jobs == cores
    assert get_engine("cpp_standalone").make_jobs == cores
    with pytest.raises(ParameterError, match="make_jobs"):
        get_engine("cpp_standalone", make_jobs=0)
    with pytest.raises(ParameterError, match="threads"):
        get_engine("cpp_standalone", threads=-1)


def test_cuda_engine_refuses_openmp_threads():
    pytest.importorskip("brian2cuda")
    with pytest.raises(ParameterError, match="OpenMP"):
        get_engine("cuda_standalone", threads=2)
    assert get_engine("cuda_standalone", make_jobs=8).make_jobs <= 2
    with pytest.raises(ParameterError, match="compute_capability"):
        get_engine("cuda_standalone", compute_capability=3.5)


def check_bad_runs(compiled, spec):
    """The errors every Compiled raises before it simulates."""
    n = spec.n_neurons
    with pytest.raises(UnitError, match="tau"):
        compiled.run(values={"tau": np.full(n, 0.02)})  # seconds without a unit
    with pytest.raises(ParameterError, match="shape"):
        compiled.run(values={"tau": np.full(n + 1, 20.0) * ms})
    with pytest.raises(ParameterError, match="cannot receive.*tau"):
        compiled.run(values={"tau_m": np.full(n, 20.0) * ms})
    with pytest.raises(ParameterError, match="shape"):
        compiled.run(stimulus=stimulus(n_steps=N_STEPS + 10))
    with pytest.raises(ParameterError, match="shape"):
        compiled.run(stimulus=np.zeros((N_STEPS, 3)))
    other = batch([rate_config(seed=spec.labels[0]["seed"] + 1)])  # other synapses
    with pytest.raises(SpecError, match="structure"):
        compiled.run(other)


def test_runtime_engine_rejects_bad_values_and_applies_good_ones():
    spec = batch([rate_config()])
    stim = stimulus()[:200]
    compiled = get_engine("runtime").build(spec, stimulus(), RATE_SETTINGS)
    check_bad_runs(compiled, spec)
    compiled = get_engine("runtime").build(spec, stim, RATE_SETTINGS)
    homogeneous = batch([rate_config(cv=0)])
    direct = compiled.run(homogeneous)
    override = compiled.run(values={"tau": np.full(spec.n_neurons, 20.0) * ms})
    np.testing.assert_allclose(override.data["rate"], direct.data["rate"], rtol=1e-12)
    assert not np.allclose(compiled.run().data["rate"], direct.data["rate"])


# --- cpp_standalone: one compiled build per structure, shared across tests --------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(scope="module")
def rate_build(cache_dir):
    engine = get_engine("cpp_standalone", cache_dir=cache_dir)
    spec = batch([rate_config()])
    compiled = engine.build(spec, stimulus(), RATE_SETTINGS)
    assert compiled.built and compiled.binary.is_file()
    return compiled


@pytest.fixture(scope="module")
def lif_builds(cache_dir):
    """One instance of one seed, and the batch of its two profiles (same synapses)."""
    engine = get_engine("cpp_standalone", cache_dir=cache_dir)
    homogeneous, heterogeneous = lif_config(cv=0), lif_config(cv=0.6)
    single = engine.build(batch([homogeneous]), stimulus(), LIF_SETTINGS)
    both = engine.build(batch([homogeneous, heterogeneous]), stimulus(), LIF_SETTINGS)
    return single, both, batch([heterogeneous])


def binary_state(compiled):
    st = compiled.binary.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


@needs_compiler
@pytest.mark.standalone
def test_rate_network_same_rates_on_runtime_and_cpp_standalone(rate_build):
    spec = rate_build.spec
    expected = runtime_features(spec, rate_build.stimulus, RATE_SETTINGS)
    got = rate_build.run()
    np.testing.assert_allclose(got.times, expected.times, rtol=1e-12)
    assert got.data["rate"].shape == (N_STEPS // 10, spec.n_neurons)
    assert np.std(got.data["rate"]) > 0.05  # the network does something
    np.testing.assert_allclose(got.data["rate"], expected.data["rate"], rtol=1e-6)
    np.testing.assert_allclose(got.data["v"], expected.data["v"], rtol=1e-6, atol=1e-12)


@needs_compiler
@pytest.mark.standalone
def test_lif_network_same_spikes_on_runtime_and_cpp_standalone(lif_builds):
    _, both, _ = lif_builds
    expected = runtime_features(both.spec, both.stimulus, LIF_SETTINGS)
    got = both.run()
    assert expected.spike_counts.sum() > 50  # enough spikes to compare
    np.testing.assert_array_equal(got.spike_counts, expected.spike_counts)
    np.testing.assert_allclose(got.data["spikes"], expected.data["spikes"], atol=1e-9)
    np.testing.assert_allclose(got.data["v"], expected.data["v"], atol=1e-9)


@needs_compiler
@pytest.mark.standalone
def test_rerun_with_new_time_constants_does_not_recompile_and_equals_fresh_build(
    rate_build, tmp_path
):
    before = binary_state(rate_build)
    new_spec = batch([rate_config(cv=1.0)])  # other time constants, same synapses
    assert not np.allclose(
        new_spec.parameters["tau"], rate_build.spec.parameters["tau"]
    )
    new_stim = stimulus(seed=9)
    rerun = rate_build.run(new_spec, stimulus=new_stim)
    again = get_engine("cpp_standalone", cache_dir=rate_build.directory.parent).build(
        new_spec, new_stim, RATE_SETTINGS
    )
    assert not again.built and again.directory == rate_build.directory
    assert binary_state(rate_build) == before  # the binary was not touched
    fresh = get_engine("cpp_standalone", cache_dir=tmp_path).build(
        new_spec, new_stim, RATE_SETTINGS
    )
    assert fresh.built and fresh.directory != rate_build.directory
    expected = fresh.run()
    np.testing.assert_allclose(rerun.data["rate"], expected.data["rate"], rtol=1e-12)
    assert not np.allclose(rerun.data["rate"], rate_build.run().data["rate"])


@needs_compiler
@pytest.mark.standalone
def test_standalone_rejects_bad_values(rate_build):
    check_bad_runs(rate_build, rate_build.spec)


@needs_compiler
@pytest.mark.standalone
def test_batched_standalone_run_equals_separate_runs(lif_builds):
    single, both, heterogeneous = lif_builds
    before = binary_state(single)
    separate = [single.run(), single.run(heterogeneous)]  # a rerun gives the second
    assert binary_state(single) == before
    parts = both.run().split()
    for part, alone in zip(parts, separate, strict=True):
        np.testing.assert_array_equal(part["spike_counts"], alone.spike_counts)
        np.testing.assert_allclose(part["data"]["v"], alone.data["v"], atol=1e-12)
    assert not np.array_equal(parts[0]["spike_counts"], parts[1]["spike_counts"])


_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_engines import RATE_SETTINGS, batch, rate_config, stimulus
    from hetbrian.engines import get_engine

    seed = int(sys.argv[1])
    compiled = get_engine("cpp_standalone", cache_dir={cache!r}).build(
        batch([rate_config(cv=1.0)]), stimulus(), RATE_SETTINGS
    )
    rates = []
    for repeat in range(5):  # several runs, to overlap with the other process
        spec = batch([rate_config(cv=0.2 + 0.2 * repeat)])
        rates.append(compiled.run(spec, stimulus=stimulus(seed)).data["rate"])
    np.save(sys.argv[2], np.stack(rates))
    print(json.dumps({{"built": compiled.built}}))
    """
)


@needs_compiler
@pytest.mark.standalone
def test_two_processes_share_one_cached_build(rate_build, tmp_path):
    before = binary_state(rate_build)
    script = tmp_path / "worker.py"
    script.write_text(
        _WORKER.format(
            tests=os.path.dirname(__file__), cache=str(rate_build.directory.parent)
        )
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(seed), str(tmp_path / f"out{seed}.npy")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (11, 12)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"built": False}
    assert binary_state(rate_build) == before
    for seed in (11, 12):
        got = np.load(tmp_path / f"out{seed}.npy")
        for repeat in range(5):
            spec = batch([rate_config(cv=0.2 + 0.2 * repeat)])
            expected = rate_build.run(spec, stimulus=stimulus(seed)).data["rate"]
            np.testing.assert_allclose(got[repeat], expected, rtol=1e-12)
    assert not list((rate_build.directory / "runs").iterdir())  # runs cleaned up


@needs_compiler
@pytest.mark.standalone
def test_openmp_build_noise_seed_repeats_a_run_and_changes_it(cache_dir):
    spec = batch([rate_config(n=10, noise=0.2)])
    compiled = get_engine("cpp_standalone", cache_dir=cache_dir, threads=2).build(
        spec, stimulus()[:200], RATE_SETTINGS
    )
    assert "-fopenmp" in (compiled.directory / "makefile").read_text()
    first, second = compiled.run(seed=1), compiled.run(seed=1)
    other = compiled.run(seed=2)
    np.testing.assert_array_equal(first.data["v"], second.data["v"])
    assert not np.allclose(first.data["v"], other.data["v"])
    np.testing.assert_array_equal(compiled.run().data["v"], compiled.run().data["v"])


# --- cuda_standalone: compile here; run where a GPU is lent ------------------------


@pytest.mark.cuda
def test_cuda_project_compiles_and_runs_only_with_a_gpu(tmp_path):
    pytest.importorskip("brian2cuda", reason="brian2cuda (the cuda extra) is absent")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on the PATH")
    cpu_prefs = {k: repr(prefs[k]) for k in prefs if "cuda_standalone" not in k}
    spec = batch([rate_config(n=20)])
    stim = stimulus()[:200]
    compiled = get_engine("cuda_standalone", cache_dir=tmp_path).build(
        spec, stim, RATE_SETTINGS
    )
    assert compiled.built and compiled.binary.is_file()
    assert "-std=c++17" in (compiled.directory / "makefile").read_text()
    # no CUDA setting stays behind for CPU builds
    assert {k: repr(prefs[k]) for k in prefs if "cuda_standalone" not in k} == cpu_prefs
    if not gpu_available():
        with pytest.raises(EngineError, match="no CUDA GPU is visible"):
            compiled.run()
        return
    expected = runtime_features(spec, stim, RATE_SETTINGS)
    got = compiled.run()
    np.testing.assert_allclose(got.data["rate"], expected.data["rate"], rtol=1e-6)
