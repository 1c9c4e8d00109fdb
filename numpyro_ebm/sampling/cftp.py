r"""Perfect (exact) draws of an Ising model by coupling from the past (Propp and Wilson, 1996).

The colour-block heat-bath sweep of :class:`~numpyro_ebm.models.Ising` is *monotone* when
:math:`J \ge 0`: with the same uniforms :math:`u`, the update
:math:`s_i \leftarrow +1` if :math:`u_i < \sigma(2 m_i)` else :math:`-1`,
:math:`m_i = J \sum_{j \sim i} s_j + h_i`, preserves the order :math:`s \le s'` (coordinate-wise).
Run the top chain (all :math:`+1`) and the bottom chain (all :math:`-1`) from time :math:`-T` to
:math:`0` with the same uniforms at every time (the uniforms of sweep :math:`-t` come from
``fold_in(rng_key, t)``, so they are reused when :math:`T` doubles); when they meet at time 0 every
chain has, and the common state is an exact draw of :math:`p(s) \propto e^{-E(s)}`.

On a bipartite lattice (open boundaries or even periodic sides) an antiferromagnetic
:math:`J < 0` is handled by flipping one sublattice, :math:`s = \sigma \odot \tilde s` with
:math:`\sigma_i = (-1)^{\sum_k i_k}`: :math:`\tilde s` is an Ising model with :math:`-J > 0` and
field :math:`\sigma \odot h`.

The number of sweeps grows with the mixing time: fine for small lattices or high temperatures,
slow near and below the critical coupling of a large lattice (use MCMC there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ebm._validation import check_int

__all__ = ["ising_cftp"]


def ising_cftp(rng_key, ising, params, num_samples: int, *, max_sweeps: int = 2**14):
    r"""``num_samples`` exact draws of ``ising`` at ``params`` by monotone coupling from the past
    (module docstring). Jittable (``params`` may be traced).

    :param rng_key: a JAX key.
    :param ising: a :class:`~numpyro_ebm.models.Ising` model.
    :param params: ``{"J": scalar, "h": scalar or array of the lattice shape}``; ``J`` of either
        sign on a bipartite lattice, ``J >= 0`` otherwise (a negative ``J`` there gives NaN draws).
    :param int num_samples: number of independent draws.
    :param int max_sweeps: the largest :math:`T` tried; a draw whose chains have not met by then
        is NaN (it never happens on small lattices at moderate couplings).
    :return: ``(num_samples, *ising.shape)`` float32 spins.

    **Example**

    .. code-block:: python

        ising = Ising((4, 4))
        s = ising_cftp(jax.random.key(0), ising, {"J": 0.4, "h": 0.0}, 100)   # exact draws
        # an exact auxiliary sampler for the exchange algorithm:
        ExchangeKernel(model, aux_sampler=lambda k, p, y: ising_cftp(
            k, ising, {"J": p["J"], "h": 0.0}, y.shape[0]))
    """
    num_samples = check_int("num_samples", num_samples, 1)
    max_sweeps = check_int("max_sweeps", max_sweeps, 1)
    shape = ising.shape
    masks = [jnp.asarray(m) for m in ising.colour_masks]
    J = jnp.asarray(params["J"], jnp.float32)
    h = jnp.broadcast_to(jnp.asarray(params["h"], jnp.float32), shape)
    parity = jnp.asarray(np.where(np.indices(shape).sum(0) % 2 == 0, 1.0, -1.0), jnp.float32)
    flip = jnp.where(J < 0, parity, 1.0)
    eff = {"J": jnp.abs(J), "h": h * flip}
    invalid = (J < 0) & (not ising.is_bipartite)

    def sweep(s, key):
        u = jax.random.uniform(key, (len(masks), *shape))
        for c, mask in enumerate(masks):
            p_up = jax.nn.sigmoid(2.0 * ising.local_field(eff, s))
            s = jnp.where(mask, jnp.where(u[c] < p_up, 1.0, -1.0), s)
        return s

    def one(key):
        def run(T):
            def body(i, state):
                top, bottom = state
                k = jax.random.fold_in(key, T - i)  # sweep at time -(T - i)
                return sweep(top, k), sweep(bottom, k)

            ones = jnp.ones(shape, jnp.float32)
            return jax.lax.fori_loop(0, T, body, (ones, -ones))

        def cond(state):
            T, top, bottom = state
            return jnp.any(top != bottom) & (T < max_sweeps)

        def double(state):
            T = 2 * state[0]
            return (T, *run(T))

        T, top, bottom = jax.lax.while_loop(cond, double, (jnp.int32(1), *run(jnp.int32(1))))
        ok = jnp.all(top == bottom) & ~invalid
        return jnp.where(ok, top * flip, jnp.nan)

    return jax.vmap(one)(jax.random.split(rng_key, num_samples))
