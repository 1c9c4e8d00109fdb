"""The raw-threefry uniforms of ``numpyro_ebm.models.lattice`` (used by the Ising and binary
RBM sweeps): the right distribution, disjoint counter ranges independent, other key types."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from numpyro_ebm.models.lattice import uniform01, uniform_bits, uniform_pm1


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_uniform01_is_uniform_and_offset_ranges_are_independent(impl):
    key = jax.random.key(0, impl=impl)
    n = 20001  # odd: threefry pads its counters
    a = np.asarray(uniform01(key, (n,), jnp.float32), np.float64)
    b = np.asarray(uniform01(key, (n,), jnp.float32, offset=n), np.float64)
    for u in (a, b):
        assert u.min() >= 0.0 and u.max() < 1.0
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    # independent ranges: correlation within 4 standard errors of 0, and not the same numbers
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(n)
    assert np.mean(a == b) < 1e-3
    # the same range twice is the same draw (the offset is what separates them)
    np.testing.assert_array_equal(a, np.asarray(uniform01(key, (n,), jnp.float32)))


def test_uniform_bits_under_vmap_equals_per_key_calls():
    keys = jax.random.split(jax.random.key(1), 5)
    batched = jax.vmap(lambda k: uniform_bits(k, (7,), offset=3))(keys)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], uniform_bits(keys[i], (7,), offset=3))


def test_uniform_pm1_range_and_mean():
    u = np.asarray(uniform_pm1(jax.random.key(2), (100_000,), jnp.float32), np.float64)
    assert u.min() >= -1.0 and u.max() < 1.0
    assert abs(u.mean()) < 4 * np.sqrt(1 / 3 / u.size)
