import gc
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

# Compilation is most of the suite's time (backend compilation was 75% of the summed test time
# of four of the heaviest modules), so the suite compiles at LLVM level 1 instead of XLA's
# default and shares one persistent compilation cache between the xdist workers for the length
# of a run: the same small programs recur across tests and after each module's cache reset.
# Measured on those four modules (2 workers, 2 cores): 180 s -> 111 s. Set
# NUMPYRO_EBM_TEST_FULL_OPT=1 to test at XLA's default optimization level.
if not os.environ.get("NUMPYRO_EBM_TEST_FULL_OPT"):
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=1").strip()
if "NUMPYRO_EBM_TEST_CACHE_DIR" not in os.environ:
    # The controller (or a run without xdist) makes the directory; workers inherit the variable.
    os.environ["NUMPYRO_EBM_TEST_CACHE_DIR"] = tempfile.mkdtemp(prefix="numpyro-ebm-tests-")
    _OWN_CACHE_DIR = os.environ["NUMPYRO_EBM_TEST_CACHE_DIR"]
else:
    _OWN_CACHE_DIR = None

import jax  # noqa: E402

from numpyro_ebm.cache import enable_compilation_cache  # noqa: E402

jax.config.update("jax_enable_x64", False)
enable_compilation_cache(os.environ["NUMPYRO_EBM_TEST_CACHE_DIR"], min_compile_time_secs=0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if _OWN_CACHE_DIR is not None:
        shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches_per_module():
    """Each test module starts from empty JAX caches, with what survives moved out of the
    cyclic garbage collector's reach (``gc.freeze``). Measured: a test took 59.6 s late in the
    full run and 18.7 s alone, and the default suite went from 24:05 to 19:35 with this reset;
    the likely cause is the collector rescanning every earlier module's cached jaxprs and
    programs (clearing and freezing were not measured apart)."""
    jax.clear_caches()
    gc.collect()
    gc.freeze()
