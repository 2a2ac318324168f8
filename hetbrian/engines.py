"""Simulation engines: one network on Brian2 runtime, C++ or CUDA standalone, by name.

Choose an engine with :func:`get_engine`; ``engine.build(spec, stimulus, settings)``
returns a :class:`Compiled` network and ``compiled.run(spec)`` simulates it with the
values of ``spec`` (same structure, any parameter values)::

    engine = get_engine("cpp_standalone")
    compiled = engine.build(spec, stimulus, settings)   # compiles, or reuses the cache
    features = compiled.run(other_spec, stimulus=other_stimulus)   # no recompilation

Engines

===================  ==========================================================
``runtime``          Brian2's runtime device, NumPy code generation: no compiler.
``cython``           Brian2's runtime device, Cython code (cached by Brian2).
``cpp_standalone``   One C++ project per network structure, compiled once.
``cuda_standalone``  The same with brian2cuda (optional ``cuda`` extra; nvcc).
===================  ==========================================================

What a standalone build depends on, and what it does not. A compiled binary is keyed
by :meth:`~hetbrian.network.NetworkSpec.structure_key` (model equations, sizes, synapse
indices, recorded features, ``dt``, ``readout_dt``, stimulus length), the stimulus step,
the engine's options (OpenMP threads; GPU and compute capability), the compiler flags
and the Brian2 version. Everything else is a **value** and reaches the binary at run
time: per-neuron parameters, input weights, bias, noise amplitude, initial values,
recurrent weights and the stimulus itself (a ``TimedArray`` of fixed shape).

How values reach the binary. Brian2 (>= 2.6) compiles a ``set_from_command_line``
step into every standalone ``main``: ``device.run(run_args={group.tau: values})``
writes each array to a file and starts ``main --results_dir DIR neurons.tau=FILE``.
The engines here start ``main`` with exactly these arguments themselves, reading the
names, types and result files from a manifest written at build time. So a rerun needs
no Brian2 objects and no device state at all: it works in the process that built the
project, in a new process, and in several processes at once, and costs the binary's
run time plus a few milliseconds (``docs/performance_engines.md`` compares it with
rebuilding the Brian2 objects and calling ``device.build`` and ``device.run``).

Cache and concurrency. Projects live in ``cache_dir/<engine>-<key>/`` (default
``$HETBRIAN_CACHE`` or ``~/.cache/hetbrian/builds``), next to a lock file
``<engine>-<key>.lock``. A build holds the lock exclusively; a run holds it shared, so
runs of one project proceed together and never see a build half-written. Each run
reads its inputs from and writes its results to a directory of its own under
``runs/``, removed after the results are read; the project's own files are never
written by a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import brian2
import numpy as np
from brian2 import second
from brian2.devices.device import reset_device
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

from hetbrian.errors import EngineError, ParameterError, SpecError
from hetbrian.network import (
    GROUP_NAME,
    STIMULUS_NAME,
    SYNAPSES_NAME,
    BrianNetwork,
    Features,
    quantity_in,
    value_arrays,
)

__all__ = [
    "ENGINES",
    "Engine",
    "RuntimeEngine",
    "StandaloneEngine",
    "CudaStandaloneEngine",
    "Compiled",
    "RuntimeCompiled",
    "StandaloneCompiled",
    "get_engine",
    "structure_key",
    "default_cache_dir",
    "gpu_available",
]

log = logging.getLogger(__name__)

#: Engine names accepted by :func:`get_engine`.
ENGINES = ("runtime", "cython", "cpp_standalone", "cuda_standalone")

#: Bumped whenever the layout of a cached project or its manifest changes.
_CACHE_FORMAT = 1
_MANIFEST = "hetbrian_build.json"
#: Environment variable through which a run passes its noise seed to the binary.
_SEED_VARIABLE = "HETBRIAN_SEED"
#: Compute capability compiled for when no GPU is visible: the lowest CUDA 13 supports;
#: the embedded PTX runs on every later architecture.
_FALLBACK_COMPUTE_CAPABILITY = 7.5
#: Unlimited parallel nvcc jobs were seen to take 12 GB for one small project.
_CUDA_MAKE_JOBS = 2

# Reseeds the binary's random generators from HETBRIAN_SEED before the network runs
# (cpp_standalone only; Brian2 itself fixes a seed at compile time or none at all).
_SEED_CODE = f"""
{{
    const char* _hetbrian_seed = std::getenv("{_SEED_VARIABLE}");
    if (_hetbrian_seed != nullptr) {{
        unsigned long _seed = std::stoul(_hetbrian_seed);
        for (size_t _i = 0; _i < brian::_random_generators.size(); _i++)
            brian::_random_generators[_i].seed(_seed + _i);
    }}
}}
"""


def default_cache_dir():
    """Where standalone builds are cached unless ``cache_dir`` says otherwise.

    ``$HETBRIAN_CACHE`` when set, else ``$XDG_CACHE_HOME/hetbrian/builds`` (by default
    ``~/.cache/hetbrian/builds``).
    """
    if os.environ.get("HETBRIAN_CACHE"):
        return Path(os.environ["HETBRIAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hetbrian" / "builds"


def gpu_available():
    """Whether a CUDA GPU is visible (``nvidia-smi -L`` lists one; asked once)."""
    return bool(_gpu_list())


@functools.cache
def _gpu_list():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")]


def _gpu_compute_capability(gpu_id):
    """Compute capability of GPU ``gpu_id`` as reported by ``nvidia-smi``, or None."""
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                f"--id={gpu_id}",
                "--query-gpu=compute_cap",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return float(out.stdout.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def _check_stimulus(stimulus, n_inputs):
    stimulus = np.ascontiguousarray(stimulus, dtype=float)
    if stimulus.ndim != 2 or stimulus.shape[1] != n_inputs:
        raise ParameterError(
            f"stimulus has shape {stimulus.shape}; expected (n_steps, {n_inputs})"
        )
    if not np.all(np.isfinite(stimulus)):
        raise ParameterError("stimulus contains NaN or inf")
    return stimulus


def _noise_seed(spec, seed):
    """The run's noise seed: ``seed``, or one derived from the instances' seeds."""
    if seed is not None:
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ParameterError(f"seed={seed!r}; expected an integer >= 0 or None")
        return int(seed)
    seeds = [label.get("seed", 0) for label in spec.labels]
    return zlib.crc32(json.dumps(seeds, default=str).encode())


def _dims(unit):
    dims = get_dimensions(unit)
    return [float(d) for d in dims._dims] if dims is not DIMENSIONLESS else [0.0] * 7


def _unit_name(unit):
    dims = get_dimensions(unit)
    return "1" if dims is DIMENSIONLESS else repr(brian2.get_unit(dims))


def _resolve_overrides(arrays, values):
    """Replace entries of ``arrays`` by user-given quantities, checking name and unit.

    Parameters
    ----------
    arrays : dict of str to (ndarray, Unit)
        From :func:`hetbrian.network.value_arrays`.
    values : dict of str to Quantity or ndarray, or None
        Keys are ``"neurons.tau"``-style names or bare variable names (``"tau"``,
        ``"w"`` for the recurrent weights).

    Returns
    -------
    arrays : dict of str to (ndarray, Unit)
    changed : list of str
        The full names of the entries replaced.
    """
    if not values:
        return arrays, []
    arrays = dict(arrays)
    changed = []
    for key, value in values.items():
        full = key if "." in key else None
        if full is None:
            matches = [k for k in arrays if k.split(".", 1)[1] == key]
            full = matches[0] if len(matches) == 1 else None
        if full not in arrays:
            names = sorted({k.split(".", 1)[1] for k in arrays})
            raise ParameterError(
                f"values names {key!r}, which the binary cannot receive; expected one "
                f"of {names}"
            )
        old, unit = arrays[full]
        new = quantity_in(f"values[{key!r}]", value, unit)
        if new.ndim == 0:
            new = np.full(old.shape, float(new))
        if new.shape != np.shape(old):
            raise ParameterError(
                f"values[{key!r}] has shape {new.shape}; the structure has "
                f"{np.shape(old)} (sizes and synapses need a new build)"
            )
        arrays[full] = (new, unit)
        changed.append(full)
    return arrays, changed


@contextlib.contextmanager
def _file_lock(path, shared=False):
    """Hold an advisory ``flock`` on ``path`` (shared or exclusive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _preferences(overrides):
    """Set Brian2 preferences for the duration of the block, then restore them."""
    saved = {name: brian2.prefs[name] for name in overrides}
    try:
        for name, value in overrides.items():
            brian2.prefs[name] = value
        yield
    finally:
        for name, value in saved.items():
            brian2.prefs[name] = value


@contextlib.contextmanager
def _active_device(name, **options):
    """Make a fresh Brian2 device ``name`` active for the block, then go back."""
    brian2.set_device(name, **options)
    device = brian2.get_device()
    try:
        device.reinit()
        device.activate(**options)
        yield device
    finally:
        device.reinit()
        reset_device()


class Compiled:
    """A network ready to run with new values; made by :meth:`Engine.build`.

    Attributes
    ----------
    engine : Engine
    spec : NetworkSpec
        The spec it was built from (its values are the defaults of :meth:`run`).
    stimulus : ndarray, shape (n_steps, K)
    settings : SimulationSettings
    stimulus_dt : Quantity
    """

    def __init__(self, engine, spec, stimulus, settings, stimulus_dt):
        self.engine = engine
        self.spec = spec
        self.stimulus = stimulus
        self.settings = settings
        self.stimulus_dt = stimulus_dt
        self.key = structure_key(spec, settings, stimulus.shape[0], stimulus_dt)

    def _prepare(self, spec, stimulus, values):
        """Check a run's inputs against the build.

        Returns the spec, the stimulus, the values the binary receives
        (:func:`hetbrian.network.value_arrays` with the overrides) and the names of
        the overridden ones.
        """
        spec = self.spec if spec is None else spec
        if (
            structure_key(spec, self.settings, self.stimulus.shape[0], self.stimulus_dt)
            != self.key
        ):
            raise SpecError(
                "the spec has another structure than the build (model, sizes, "
                "synapses or noise differ); build it with engine.build()"
            )
        if stimulus is None:
            stimulus = self.stimulus
        else:
            stimulus = _check_stimulus(stimulus, spec.n_inputs)
            if stimulus.shape != self.stimulus.shape:
                raise ParameterError(
                    f"stimulus has shape {stimulus.shape}; the build has "
                    f"{self.stimulus.shape} (another length needs another build)"
                )
        arrays, changed = _resolve_overrides(value_arrays(spec, self.settings), values)
        return spec, stimulus, arrays, changed

    def run(self, spec=None, stimulus=None, values=None, seed=None):
        """Simulate with the values of ``spec`` and return the recorded features.

        Parameters
        ----------
        spec : NetworkSpec, optional
            Same structure as the build, any values (default: the build's spec).
        stimulus : ndarray, shape (n_steps, K), optional
            Input signal of the build's shape (default: the build's stimulus).
        values : dict of str to Quantity, optional
            Single variables to override after ``spec``'s values, by name
            (``{"tau": taus * ms}``, ``{"w": weights}``); each of the structure's
            size and with the variable's unit.
        seed : int, optional
            Seed of the noise; by default one derived from the instances' seeds, so
            that a run repeats exactly.

        Returns
        -------
        Features
        """
        raise NotImplementedError


class RuntimeCompiled(Compiled):
    """A network on Brian2's runtime device: each run builds the Brian2 objects anew.

    Nothing is compiled ahead: with ``cython`` the generated code is cached by Brian2
    itself (fixed object names make the cache hit on every rebuild).
    """

    def run(self, spec=None, stimulus=None, values=None, seed=None):  # noqa: D102
        spec, stimulus, arrays, changed = self._prepare(spec, stimulus, values)
        noise_seed = _noise_seed(spec, seed)
        target = self.engine.target
        previous = brian2.get_device()
        if type(previous).__name__ != "RuntimeDevice":
            brian2.set_device("runtime")
        try:
            with _preferences({"codegen.target": target}):
                net = BrianNetwork(spec, stimulus, self.settings, self.stimulus_dt)
                owners = {GROUP_NAME: net.group, SYNAPSES_NAME: net.synapses}
                for key in changed:  # the spec's own values are set already
                    owner, name = key.split(".")
                    array, unit = arrays[key]
                    getattr(owners[owner], name)[:] = np.asarray(array) * unit
                if spec.noise:
                    # seeds NumPy's global generator too, which Brian2's runtime uses
                    brian2.seed(noise_seed)
                net.run()
                return net.features()
        finally:
            if previous is not brian2.get_device():
                reset_device()


@dataclass
class _Output:
    file: str
    dtype: str


@dataclass
class _Manifest:
    """What a run needs to know about a compiled project (stored as JSON)."""

    format: int
    engine: str
    key: str
    n_neurons: int
    inputs: dict
    stimulus: dict
    times: _Output
    features: dict
    spike_counts: _Output | None
    library_path: list = field(default_factory=list)
    build_seconds: float = 0.0

    def to_json(self):
        def plain(x):
            return x.__dict__ if isinstance(x, _Output) else x

        data = {k: plain(v) for k, v in self.__dict__.items()}
        data["features"] = {k: plain(v) for k, v in self.features.items()}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        data["times"] = _Output(**data["times"])
        data["features"] = {k: _Output(**v) for k, v in data["features"].items()}
        if data["spike_counts"] is not None:
            data["spike_counts"] = _Output(**data["spike_counts"])
        return cls(**data)


class StandaloneCompiled(Compiled):
    """A compiled standalone project in the build cache.

    Attributes
    ----------
    directory : Path
        The project folder (``main`` and its static arrays).
    built : bool
        Whether :meth:`Engine.build` compiled the project (False: found in the cache).
    build_seconds : float
        Time the compilation took when the project was built, in seconds.
    """

    def __init__(self, engine, spec, stimulus, settings, stimulus_dt, directory):
        super().__init__(engine, spec, stimulus, settings, stimulus_dt)
        self.directory = Path(directory)
        self.built = False
        self._manifest = None

    @property
    def binary(self):
        """Path of the compiled executable."""
        return self.directory / "main"

    @property
    def lock_path(self):
        return self.directory.with_name(self.directory.name + ".lock")

    @property
    def build_seconds(self):
        return self._manifest.build_seconds

    def run(self, spec=None, stimulus=None, values=None, seed=None):  # noqa: D102
        spec, stimulus, arrays, _ = self._prepare(spec, stimulus, values)
        manifest = self._manifest
        self.engine._check_can_run(self)
        env = dict(os.environ)
        env.update(brian2.prefs["devices.cpp_standalone.run_environment_variables"])
        env[_SEED_VARIABLE] = str(_noise_seed(spec, seed))
        if manifest.library_path:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                manifest.library_path + [env.get("LD_LIBRARY_PATH", "")]
            )
        # shared: other runs go on at the same time, a build of this project waits
        with _file_lock(self.lock_path, shared=True):
            runs = self.directory / "runs"
            runs.mkdir(exist_ok=True)
            run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
            try:
                args = [str(self.binary), "--results_dir", f"{run_dir}{os.sep}"]
                for name, (array, _unit) in sorted(arrays.items()):
                    path = run_dir / f"in_{name}.dat"
                    dtype = manifest.inputs[name]["dtype"]
                    np.ascontiguousarray(array, dtype=dtype).tofile(path)
                    args.append(f"{name}={path}")
                path = run_dir / "in_stimulus.dat"
                dtype = manifest.stimulus["dtype"]
                np.ascontiguousarray(stimulus, dtype=dtype).tofile(path)
                args.append(f"{manifest.stimulus['name']}={path}")
                start = time.perf_counter()
                done = subprocess.run(
                    args,
                    cwd=self.directory,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                log.debug(
                    "%s ran %s in %.3f s",
                    self.engine.name,
                    self.directory.name,
                    time.perf_counter() - start,
                )
                # the binary reports a value file of the wrong size but carries on
                if done.returncode != 0 or "Error reading" in done.stderr:
                    raise EngineError(
                        f"{self.engine.name}: the binary in {self.directory} failed "
                        f"(exit status {done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()[-2000:]}"
                    )
                return self._read_features(run_dir, spec)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _read_features(self, run_dir, spec):
        manifest = self._manifest

        def read(output):
            return np.fromfile(run_dir / output.file, dtype=output.dtype)

        times = read(manifest.times)
        data = {}
        for name, output in manifest.features.items():
            values = read(output).reshape(-1, manifest.n_neurons).astype(float)
            if name == "spikes":
                values /= float(self.settings.spike_filter_tau)
            data[name] = values
        counts = (
            read(manifest.spike_counts) if manifest.spike_counts is not None else None
        )
        if not all(np.all(np.isfinite(v)) for v in data.values()):
            log.warning(
                "%s: the recorded features contain NaN or inf (the dynamics diverged)",
                self.engine.name,
            )
        return Features(times=times, data=data, spike_counts=counts, spec=spec)


def structure_key(spec, settings, n_steps, stimulus_dt):
    """Key of everything a standalone binary depends on, for one network.

    Parameters
    ----------
    spec : NetworkSpec
    settings : SimulationSettings
    n_steps : int
        Number of stimulus rows.
    stimulus_dt : Quantity
        Step of the stimulus.
    """
    return (
        spec.structure_key(settings, n_steps)
        + "-"
        + hashlib.sha256(repr(float(stimulus_dt)).encode()).hexdigest()[:6]
    )


class Engine:
    """Base class: builds a :class:`Compiled` network from a spec.

    A subclass defines :meth:`build`; :meth:`simulate` builds and runs once.

    Attributes
    ----------
    name : str
        One of :data:`ENGINES`.
    """

    name = ""

    def _normalise(self, spec, stimulus, settings, stimulus_dt):
        settings.check_model(spec.model)
        stimulus = _check_stimulus(stimulus, spec.n_inputs)
        stimulus_dt = settings.dt if stimulus_dt is None else stimulus_dt
        quantity_in("stimulus_dt", stimulus_dt, second)
        return stimulus, stimulus_dt

    def build(self, spec, stimulus, settings, stimulus_dt=None):
        """Prepare ``spec`` to run with any values of its structure.

        Parameters
        ----------
        spec : NetworkSpec
        stimulus : ndarray, shape (n_steps, K)
            Input signal; its shape is part of the structure, its values are not.
        settings : SimulationSettings
        stimulus_dt : Quantity, optional
            Step of the stimulus (default ``settings.dt``).

        Returns
        -------
        Compiled
        """
        raise NotImplementedError

    def simulate(self, spec, stimulus, settings, stimulus_dt=None, seed=None):
        """Build (or find in the cache) and run once; see :meth:`build`.

        Returns
        -------
        Features
        """
        return self.build(spec, stimulus, settings, stimulus_dt).run(seed=seed)

    def describe(self):
        """Options of the engine that a compiled binary depends on."""
        return {"engine": self.name}

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({options})"


class RuntimeEngine(Engine):
    """Brian2's runtime device with NumPy (``runtime``) or Cython (``cython``) code.

    Parameters
    ----------
    target : {"numpy", "cython"}
        Brian2 code-generation target.
    """

    def __init__(self, target="numpy"):
        if target not in ("numpy", "cython"):
            raise ParameterError(f"target={target!r}; expected 'numpy' or 'cython'")
        self.target = target
        self.name = "runtime" if target == "numpy" else "cython"

    def build(self, spec, stimulus, settings, stimulus_dt=None):  # noqa: D102
        stimulus, stimulus_dt = self._normalise(spec, stimulus, settings, stimulus_dt)
        return RuntimeCompiled(self, spec, stimulus, settings, stimulus_dt)


class StandaloneEngine(Engine):
    """Brian2's ``cpp_standalone`` device: one compiled project per structure.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Folder of the build cache (default :func:`default_cache_dir`).
    threads : int, optional
        OpenMP threads of the simulation; 0 or None compiles without OpenMP. Part
        of the build key.
    make_jobs : int, optional
        Parallel compiler jobs (default: the machine's cores; never more).
    rebuild : bool
        Delete the cached project, if any, and compile it from scratch.
    """

    name = "cpp_standalone"
    device_name = "cpp_standalone"

    def __init__(self, cache_dir=None, threads=None, make_jobs=None, rebuild=False):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if threads is not None and (
            not isinstance(threads, int | np.integer) or threads < 0
        ):
            raise ParameterError(f"threads={threads!r}; expected an integer >= 0")
        self.threads = int(threads or 0)
        cores = os.cpu_count() or 1
        if make_jobs is not None and (
            not isinstance(make_jobs, int | np.integer) or make_jobs < 1
        ):
            raise ParameterError(f"make_jobs={make_jobs!r}; expected an integer >= 1")
        self.make_jobs = min(int(make_jobs or cores), cores)
        self.rebuild = bool(rebuild)

    @property
    def cache_root(self):
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def describe(self):  # noqa: D102
        return {"engine": self.name, "threads": self.threads}

    def _compile_options(self):
        """Brian2 preferences of a build (everything here enters the build key)."""
        return {
            "devices.cpp_standalone.openmp_threads": self.threads,
            "devices.cpp_standalone.extra_make_args_unix": [f"-j{self.make_jobs}"],
        }

    def _build_key(self, compiled):
        options = self._compile_options()
        options.pop("devices.cpp_standalone.extra_make_args_unix")
        payload = {
            "format": _CACHE_FORMAT,
            "structure": compiled.key,
            "engine": self.describe(),
            "options": options,
            "compiler": list(brian2.prefs["codegen.cpp.extra_compile_args_gcc"]),
            "float": str(brian2.prefs["core.default_float_dtype"]),
            "brian2": brian2.__version__,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def build(self, spec, stimulus, settings, stimulus_dt=None):  # noqa: D102
        stimulus, stimulus_dt = self._normalise(spec, stimulus, settings, stimulus_dt)
        compiled = StandaloneCompiled(self, spec, stimulus, settings, stimulus_dt, ".")
        key = self._build_key(compiled)
        directory = self.cache_root / f"{self.name}-{key}"
        compiled.directory = directory
        with _file_lock(compiled.lock_path):
            if self.rebuild:
                shutil.rmtree(directory, ignore_errors=True)
            manifest = self._load_manifest(directory, key)
            if manifest is None:
                manifest = self._compile(compiled, key)
                compiled.built = True
            else:
                log.info("%s: reusing the build in %s", self.name, directory)
        compiled._manifest = manifest
        return compiled

    def _load_manifest(self, directory, key):
        path = directory / _MANIFEST
        if not path.is_file() or not (directory / "main").is_file():
            return None
        try:
            manifest = _Manifest.from_json(path.read_text())
        except (ValueError, TypeError, KeyError) as err:
            log.warning("ignoring the unreadable manifest %s: %s", path, err)
            return None
        if manifest.format != _CACHE_FORMAT or manifest.key != key:
            return None
        return manifest

    def _prepare_device(self, device):
        """Hook for subclasses: device settings before the objects are made."""
        device.insert_code("main", _SEED_CODE)

    def _generate_and_compile(self, device, directory):
        device.build(directory=str(directory), compile=True, run=False)

    def _compile(self, compiled, key):
        directory = compiled.directory
        manifest_path = directory / _MANIFEST
        manifest_path.unlink(missing_ok=True)
        log.info("%s: compiling %s", self.name, directory)
        start = time.perf_counter()
        with (
            _preferences(self._compile_options()),
            _active_device(self.device_name, build_on_run=False) as device,
        ):
            net = BrianNetwork(
                compiled.spec,
                compiled.stimulus,
                compiled.settings,
                compiled.stimulus_dt,
            )
            self._prepare_device(device)
            net.network.run(net.duration, namespace={})
            try:
                self._generate_and_compile(device, directory)
            except (RuntimeError, OSError) as err:
                raise EngineError(
                    f"{self.name}: compiling the project in {directory} failed: {err}"
                ) from err
            manifest = self._describe_build(device, net, key)
        manifest.build_seconds = time.perf_counter() - start
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(manifest.to_json())
        tmp.replace(manifest_path)  # written last: its presence marks a finished build
        log.info(
            "%s: compiled %s in %.1f s", self.name, directory, manifest.build_seconds
        )
        return manifest

    def _describe_build(self, device, net, key):
        inputs = {}
        for name, (array, unit) in value_arrays(net.spec, net.settings).items():
            owner, var = name.split(".")
            variable = getattr(
                net.group if owner == GROUP_NAME else net.synapses, var
            ).variable
            inputs[name] = {
                "dtype": np.dtype(variable.dtype).name,
                "size": int(np.size(array)),
                "unit": _unit_name(unit),
                "dims": _dims(unit),
            }

        def output(variable):
            return _Output(
                device.get_array_filename(variable), np.dtype(variable.dtype).name
            )

        recorded = dict(
            zip(
                net.settings.features,
                [net.monitor.variables[v] for v in net.monitor.record_variables],
                strict=True,
            )
        )
        return _Manifest(
            format=_CACHE_FORMAT,
            engine=self.name,
            key=key,
            n_neurons=net.spec.n_neurons,
            inputs=inputs,
            stimulus={
                "name": f"{STIMULUS_NAME}.values",
                "dtype": np.dtype(net.stimulus.values.dtype).name,
                "shape": list(net.stimulus.values.shape),
            },
            times=output(net.monitor.variables["t"]),
            features={name: output(v) for name, v in recorded.items()},
            spike_counts=output(net.spike_counter.variables["count"])
            if net.spike_counter is not None
            else None,
            library_path=self._library_path(),
        )

    def _library_path(self):
        return []

    def _check_can_run(self, compiled):
        """Hook for subclasses: raise where the binary cannot run on this machine."""


def _import_brian2cuda():
    try:
        return importlib.import_module("brian2cuda")
    except ImportError as err:
        raise EngineError(
            "engine 'cuda_standalone' needs brian2cuda, which is not installed; "
            "install the cuda extra (pip install 'hetbrian[cuda]') or choose "
            "'cpp_standalone'"
        ) from err


def _curand_paths():
    """Include and library folders of the ``nvidia-curand`` wheel, or None."""
    try:
        nvidia = importlib.import_module("nvidia")
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        # nvidia/cu13/lib (CUDA 13 wheels) or nvidia/curand/lib (older wheels)
        for library in sorted(Path(base).glob("*/lib/libcurand.so*")):
            root = library.parent.parent
            if (root / "include" / "curand.h").is_file():
                return root / "include", library.parent, library
    return None


class CudaStandaloneEngine(StandaloneEngine):
    """brian2cuda's ``cuda_standalone`` device: one compiled CUDA project per structure.

    Where a GPU is visible, the project is compiled for ``gpu_id`` and its compute
    capability (asked of ``nvidia-smi``). Where none is, it is still generated and
    compiled, for ``compute_capability`` (default 7.5, whose embedded PTX later GPUs
    run), and :meth:`StandaloneCompiled.run` raises an
    :class:`~hetbrian.errors.EngineError` that says so.

    All CUDA settings (GPU detection off, the GPU and its compute capability, the
    ``nvidia-curand`` wheel's headers and libraries, ``-std=c++17``, two ``make``
    jobs) are Brian2 preferences set for the build alone and restored afterwards, so
    none reaches a later CPU build.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Folder of the build cache (default :func:`default_cache_dir`).
    gpu_id : int
        GPU to run on (as numbered by ``CUDA_VISIBLE_DEVICES``).
    compute_capability : float, optional
        Architecture to compile for (``8.0``); default: the GPU's, or 7.5.
    make_jobs : int
        Parallel compiler jobs, at most 2 (nvcc is memory-hungry).
    rebuild : bool
        Delete the cached project, if any, and compile it from scratch.
    """

    name = "cuda_standalone"
    device_name = "cuda_standalone"

    def __init__(
        self,
        cache_dir=None,
        gpu_id=0,
        compute_capability=None,
        make_jobs=_CUDA_MAKE_JOBS,
        rebuild=False,
    ):
        _import_brian2cuda()
        super().__init__(cache_dir=cache_dir, make_jobs=make_jobs, rebuild=rebuild)
        self.make_jobs = min(self.make_jobs, _CUDA_MAKE_JOBS)
        if not isinstance(gpu_id, int | np.integer) or gpu_id < 0:
            raise ParameterError(f"gpu_id={gpu_id!r}; expected an integer >= 0")
        self.gpu_id = int(gpu_id)
        if compute_capability is None:
            detected = _gpu_compute_capability(gpu_id) if gpu_available() else None
            compute_capability = detected or _FALLBACK_COMPUTE_CAPABILITY
        if not isinstance(compute_capability, float | int) or compute_capability < 5:
            raise ParameterError(
                f"compute_capability={compute_capability!r}; expected a number >= 5.0 "
                "such as 8.0"
            )
        self.compute_capability = float(compute_capability)

    def describe(self):  # noqa: D102
        return {
            "engine": self.name,
            "gpu_id": self.gpu_id,
            "compute_capability": self.compute_capability,
        }

    def _curand(self):
        paths = _curand_paths()
        if paths is None:
            raise EngineError(
                "cuda_standalone: the nvidia-curand wheel was not found; install the "
                "cuda extra (pip install 'hetbrian[cuda]')"
            )
        include, libdir, library = paths
        # The wheel ships libcurand.so.10 only; -lcurand needs a libcurand.so.
        link_dir = self.cache_root / "_cuda_link"
        link_dir.mkdir(parents=True, exist_ok=True)
        link = link_dir / "libcurand.so"
        if not link.exists() or link.resolve() != library.resolve():
            link.unlink(missing_ok=True)  # a link into an environment now gone
            with contextlib.suppress(FileExistsError):  # another process made it
                link.symlink_to(library)
        return include, libdir, link_dir

    def _compile_options(self):  # noqa: D102
        include, libdir, link_dir = self._curand()
        gcc = [
            "-std=c++17" if arg == "-std=c++11" else arg
            for arg in brian2.prefs["codegen.cpp.extra_compile_args_gcc"]
        ]
        backend = "devices.cuda_standalone.cuda_backend."
        return {
            backend + "detect_gpus": False,
            backend + "gpu_id": self.gpu_id,
            backend + "compute_capability": self.compute_capability,
            backend + "extra_compile_args_nvcc": [
                "-w",
                "-use_fast_math",
                f"-I{include}",
            ],
            "codegen.cpp.extra_compile_args_gcc": gcc,
            "codegen.cpp.include_dirs": [str(include)],
            "codegen.cpp.library_dirs": [str(link_dir), str(libdir)],
            "codegen.cpp.runtime_library_dirs": [str(libdir)],
            "devices.cpp_standalone.extra_make_args_unix": [f"-j{self.make_jobs}"],
        }

    def _build_key(self, compiled):  # noqa: D102
        key = super()._build_key(compiled)
        if shutil.which("nvcc") is None and not os.environ.get("CUDA_PATH"):
            raise EngineError(
                "cuda_standalone: nvcc was not found on the PATH (nor CUDA_PATH set); "
                "install the CUDA toolkit to compile, or choose 'cpp_standalone'"
            )
        return key

    def _prepare_device(self, device):  # noqa: D102
        pass  # brian2cuda draws random numbers with cuRAND, seeded at compile time

    def _generate_and_compile(self, device, directory):  # noqa: D102
        device.build(directory=str(directory), compile=False, run=False)
        # brian2cuda's makefile template fixes -std=c++11, which CUDA 13's headers
        # (CCCL) reject; the flag is rewritten before make runs.
        makefile = directory / "makefile"
        makefile.write_text(makefile.read_text().replace("-std=c++11", "-std=c++17"))
        compiler, _ = brian2.codegen.cpp_prefs.get_compiler_and_args()
        device.compile_source(str(directory), compiler, debug=False, clean=False)

    def _library_path(self):  # noqa: D102
        return [str(self._curand()[1])]

    def _check_can_run(self, compiled):  # noqa: D102
        if not gpu_available():
            raise EngineError(
                f"cuda_standalone: the project in {compiled.directory} is compiled "
                f"(for compute capability {self.compute_capability}), but no CUDA GPU "
                "is visible on this machine (nvidia-smi lists none); run it on a "
                "machine with a GPU, or choose 'cpp_standalone'"
            )


def get_engine(name, cache_dir=None, threads=None, **options):
    """The engine called ``name``.

    Parameters
    ----------
    name : {"runtime", "cython", "cpp_standalone", "cuda_standalone"}
        ``runtime`` and ``cython`` run Brian2's runtime device with NumPy or Cython
        code generation; the two standalone engines compile one project per network
        structure and cache it.
    cache_dir : str or Path, optional
        Build cache of the standalone engines (default :func:`default_cache_dir`);
        the runtime engines need none and ignore it.
    threads : int, optional
        OpenMP threads (``cpp_standalone`` only; brian2cuda has no OpenMP; the
        runtime engines warn and ignore it).
    **options
        Further options of the engine class: ``make_jobs``, ``rebuild``; for
        ``cuda_standalone`` also ``gpu_id`` and ``compute_capability``.

    Returns
    -------
    Engine

    Examples
    --------
    >>> get_engine("cython")
    RuntimeEngine(engine='cython')
    """
    if name not in ENGINES:
        raise ParameterError(f"engine={name!r}; expected one of {list(ENGINES)}")
    if name in ("runtime", "cython"):
        # cache_dir is ignored silently: callers pass one for whichever engine
        if threads or options:
            warnings.warn(
                f"engine {name!r} ignores threads={threads!r} and {options}; they "
                "apply to the standalone engines",
                stacklevel=2,
            )
        return RuntimeEngine("numpy" if name == "runtime" else "cython")
    if name == "cpp_standalone":
        return StandaloneEngine(cache_dir=cache_dir, threads=threads, **options)
    if threads:
        raise ParameterError(
            f"threads={threads!r}: brian2cuda has no OpenMP; leave threads unset for "
            "'cuda_standalone'"
        )
    return CudaStandaloneEngine(cache_dir=cache_dir, **options)
