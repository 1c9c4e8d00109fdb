import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches_per_module():
    """Each test module starts from empty JAX caches, with what survives moved out of the
    cyclic garbage collector's reach. Without it, the caches of every earlier module (traced
    jaxprs, lowered programs: millions of Python objects) are rescanned by each full
    collection, and a test in a long run took 2-3x its time when run alone."""
    jax.clear_caches()
    gc.collect()
    gc.freeze()
    yield
