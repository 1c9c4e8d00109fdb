import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
# The suite compiles hundreds of small programs and runs most of them briefly: without XLA's
# expensive optimization passes it takes ~16% less time on 2 CPU cores (measured on five test
# files, 292 s -> 246 s). NUMPYRO_EBM_TEST_OPTIMIZE=1 tests the fully optimized programs instead.
if not os.environ.get("NUMPYRO_EBM_TEST_OPTIMIZE"):
    jax.config.update("jax_disable_most_optimizations", True)
