"""JAX's persistent compilation cache, for scripts that are rerun.

A script's first run compiles every program (seconds each on a CPU); with the cache enabled, later
runs of the same script load the compiled programs from disk instead. The cache is JAX's own
(``jax_compilation_cache_dir``); this module only switches it on with sensible defaults.
"""

from __future__ import annotations

import os

import jax

__all__ = ["enable_compilation_cache"]

#: where the examples keep their compiled programs unless ``JAX_COMPILATION_CACHE_DIR`` is set
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "numpyro_ebm", "jax")


def enable_compilation_cache(directory: str | None = None, min_compile_time_secs: float = 0.5):
    """Switch on JAX's persistent compilation cache; return the directory used.

    Call it before the first compilation. The directory is, in order: ``directory``, the
    ``JAX_COMPILATION_CACHE_DIR`` environment variable, :data:`DEFAULT_CACHE_DIR`. Programs that
    took less than ``min_compile_time_secs`` to compile are not cached. Setting
    ``NUMPYRO_EBM_NO_CACHE=1`` leaves the cache off (e.g. to time cold compilation).

    :param directory: a writable directory (created if needed); on a cluster, a shared one.
    :param float min_compile_time_secs: JAX's ``jax_persistent_cache_min_compile_time_secs``.
    :return: the cache directory, or ``None`` when ``NUMPYRO_EBM_NO_CACHE`` is set.

    **Example**

    .. code-block:: python

        import numpyro_ebm
        numpyro_ebm.enable_compilation_cache()   # first run compiles, later runs load
    """
    if os.environ.get("NUMPYRO_EBM_NO_CACHE"):
        return None
    directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_CACHE_DIR
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    return directory
