r"""Chains as global arrays over the devices of several processes (JAX's multi-controller runtime).

With ``jax.distributed.initialize(...)`` every process runs the same program and sees every
device (``jax.devices()``) but holds only its own (``jax.local_devices()``). A *global* array is
sharded over all of them, each process holding its slice. :func:`numpyro_ebm.sample_chains`,
PCD training and :func:`numpyro_ebm.logz_ais` take and return such arrays like any other; these
helpers build them and read them back:

* :func:`chain_sharding` -- the ``NamedSharding`` that splits the chain (leading) axis over every
  device of every process;
* :func:`shard_chains` -- a value every process holds in full (same seed, same code) -> the
  global array, each process keeping only its slice;
* :func:`chains_from_local` -- each process's own slice of the chains -> the global array;
* :func:`replicate` -- a value every process holds in full -> a global array replicated on every
  device (e.g. the SVI state of a PCD run, whose parameters every process updates alike);
* :func:`gather` -- a global array -> the whole value as NumPy in every process (an all-gather;
  for results, not inside loops).

In one process without ``jax.distributed`` they work too (the global array is then an ordinary
array over the local devices), so the same script runs on one machine and on a cluster.

**Example** (in every process, after ``jax.distributed.initialize``)

.. code-block:: python

    x0 = shard_chains(jax.random.normal(jax.random.key(1), (num_chains, 2)))   # same everywhere
    result = numpyro_ebm.sample_chains(jax.random.key(0), logdensity_fn, kernel, x0, 1000)
    positions = gather(result.positions)     # (num_chains, 2) in every process
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = [
    "chain_sharding",
    "chains_from_local",
    "constrain_chains",
    "gather",
    "replicate",
    "shard_chains",
]


def chain_sharding(devices=None, axis_name: str = "chains") -> NamedSharding:
    """``NamedSharding`` of a one-axis mesh over ``devices`` (default: ``jax.devices()``, every
    device of every process) that splits the leading (chain) axis of an array over them."""
    devices = jax.devices() if devices is None else list(devices)
    mesh = jax.sharding.Mesh(np.array(devices), (axis_name,))
    return NamedSharding(mesh, PartitionSpec(axis_name))


def constrain_chains(tree, num_chains: int):
    """``jax.lax.with_sharding_constraint`` of every leaf of ``tree`` (leading axis
    ``num_chains``) to :func:`chain_sharding` when there are several devices and they divide
    ``num_chains``; ``tree`` unchanged otherwise. Inside ``jax.jit`` this keeps a batch of chains
    split over every device of every process; results do not change (only where they are
    computed)."""
    if jax.device_count() < 2 or num_chains % jax.device_count():
        return tree
    sharding = chain_sharding()
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def _check_divides(name, shape, sharding):
    num_devices = sharding.mesh.size if hasattr(sharding, "mesh") else len(sharding.device_set)
    if not shape or shape[0] % num_devices:
        raise ValueError(
            f"`{name}`: the leading (chain) axis has size {shape[0] if shape else None}, which "
            f"must be a multiple of the {num_devices} devices it is sharded over; pad or choose "
            "num_chains accordingly."
        )


def shard_chains(tree, sharding: NamedSharding | None = None):
    """A pytree that every process holds in full (the same values everywhere) -> global arrays
    whose leading (chain) axis is split over ``sharding`` (default :func:`chain_sharding`); each
    process keeps only the slices of its own devices. Shapes are unchanged: ``(num_chains, ...)``.
    """
    sharding = chain_sharding() if sharding is None else sharding

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) or x.is_fully_addressable else x
        _check_divides("tree", np.shape(x), sharding)
        return jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def chains_from_local(tree, sharding: NamedSharding | None = None):
    """Each process's own slice of the chains (leading axis ``num_chains / process_count``) ->
    global arrays with leading axis ``num_chains`` split over ``sharding`` (default
    :func:`chain_sharding`); process ``p`` holds chains ``p * n : (p + 1) * n``."""
    sharding = chain_sharding() if sharding is None else sharding

    def put(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        _check_divides("tree", global_shape, sharding)
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, tree)


def replicate(tree, devices=None):
    """A pytree that every process holds in full -> global arrays replicated on every device
    (``devices``, default ``jax.devices()``). Non-array leaves are left alone."""
    devices = jax.devices() if devices is None else list(devices)
    sharding = NamedSharding(jax.sharding.Mesh(np.array(devices), ("chains",)), PartitionSpec())

    def put(x):
        if not isinstance(x, (jax.Array, np.ndarray, np.generic, int, float)):
            return x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            impl = jax.random.key_impl(x)
            raw = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
            return jax.random.wrap_key_data(raw, impl=impl)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def gather(tree):
    """Global arrays -> NumPy arrays holding the whole value, in every process (an all-gather of
    the shards that other processes hold; a plain copy for arrays this process holds whole)."""
    from jax.experimental import multihost_utils

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)
