r"""The Ising model on a hypercubic lattice (1-D ring, 2-D square lattice, ...), spins in {-1, +1}.

.. math::

    E_\theta(s) = -J \sum_{\langle ij \rangle} s_i s_j - \sum_i h_i s_i,
    \qquad \log p_\theta(s) = -E_\theta(s) - \log Z(\theta),\qquad \theta = (J, h)

with nearest-neighbour bonds :math:`\langle ij \rangle` (each counted once; periodic boundaries
wrap). The inverse temperature is absorbed in the parameters: a physical model at
:math:`\beta` with coupling :math:`J_0` and field :math:`h_0` is ``{"J": beta * J0, "h": beta *
h0}`` (:meth:`Ising.init_params`). The object holds the lattice only; parameters are passed to
every method (the :class:`~numpyro_ebm.models.base.EnergyModel` protocol).

**Sampler.** The sites are split into colour classes, no two neighbours of one colour, so the spins
of one colour are conditionally independent given the rest and are redrawn in parallel:

.. math::

    p(s_i = +1 \mid s_{-i}) = \sigma(2 b\, m_i) = \tfrac12\,(1 + \tanh b\, m_i),
    \qquad m_i = J \sum_{j \sim i} s_j + h_i ,

at inverse temperature :math:`b` of the annealing path :math:`f_b(s) = -b E_\theta(s)`
(:meth:`Ising.annealing_path`; :math:`f_0 = 0`, uniform spins, :math:`\log Z_0 = N \log 2`).
Bipartite lattices (open boundaries, or every periodic side even) use the two checkerboard colours
(2-D lattices of even width in a two-colour layout, each colour an ``(H, W/2)`` array); others (a
periodic side of odd length) a greedy colouring with one mask per colour.

**Example**

.. code-block:: python

    ising = Ising((64, 64))
    params = ising.init_params(beta=0.5)                     # {"J": 0.5, "h": 0.0}
    up = ising.init_spins(jax.random.key(1), 32, kind="up")   # the ordered phase, quick to mix
    result = ising.sample(jax.random.key(0), params, 32, num_steps=1000, init_positions=up)
    jnp.abs(ising.magnetization(result.positions)).mean()    # ~ onsager_magnetization(0.5)
    Ising((3, 3)).log_partition(params)                      # exact, by enumeration
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_finite, check_in_set, check_int, check_positive
from numpyro_ebm.models.base import EnergyModel
from numpyro_ebm.models.lattice import bond_sum, colour_block_sweep, colouring, neighbor_sum
from numpyro_ebm.sampling.annealing import AnnealingPath
from numpyro_ebm.sampling.block_gibbs import BlockGibbsState
from numpyro_ebm.sampling.discrete import GibbsInfo

__all__ = ["Ising", "spin"]

MAX_EXACT_SITES = 24
"""Largest lattice (number of sites) whose log Z :meth:`Ising.log_partition` enumerates."""


class _Spin(constraints._SingletonConstraint):
    """The set {-1, +1} (a discrete support for spin sites)."""

    is_discrete = True
    event_dim = 0

    def __call__(self, x):
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.equal(x, 1) | xp.equal(x, -1)

    def feasible_like(self, prototype):
        return jnp.ones_like(prototype)


spin = _Spin()
"""NumPyro constraint for spins: values in {-1, +1} (``is_discrete = True``)."""


# ----------------------------------------------------------------------------- the model


@jax.tree_util.register_pytree_node_class
class Ising(EnergyModel):
    r"""Ising model on a ``shape`` lattice, spins :math:`s_i \in \{-1, +1\}` (module docstring).

    :param shape: lattice shape, e.g. ``(64, 64)`` (2-D) or ``(100,)`` / ``100`` (1-D ring).
    :param bool periodic: periodic boundaries (a torus) or open (free) boundaries.
    :param str name: prefix of the ``numpyro.param`` sites of :meth:`model` (``f"{name}_J"``,
        ``f"{name}_h"``).
    :param str site: name of the observed site of :meth:`model` (default ``f"{name}_s"``).

    Parameters: ``{"J": scalar, "h": scalar or array broadcastable to shape}`` (inverse
    temperature absorbed). The object has no array state and is a pytree without leaves, so it
    passes through ``jax.jit`` / ``jax.vmap`` as an argument; ``params`` are ordinary pytrees
    (``jax.vmap`` over ``init_params(beta=b)`` sweeps temperatures in one program).
    """

    support = spin

    def __init__(self, shape, periodic: bool = True, *, name: str = "ising", site: str | None = None):
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError as err:
            raise TypeError(f"Ising: `shape` must be a tuple of ints, got {shape!r}.") from err
        if not shape or any(d < 2 for d in shape):
            raise ValueError(
                f"Ising: `shape` must be a non-empty tuple of sizes >= 2 (e.g. (64, 64)), got "
                f"{shape!r}."
            )
        if not isinstance(periodic, (bool, np.bool_)):
            raise TypeError(f"Ising: `periodic` must be a bool, got {periodic!r}.")
        self.shape = self.event_shape = shape
        self.periodic = bool(periodic)
        self.set_names(name, site, "s")

    def tree_flatten(self):
        return (), (self.shape, self.periodic, self.name, self.site)

    @classmethod
    def tree_unflatten(cls, aux, children):
        shape, periodic, name, site = aux
        return cls(shape, periodic, name=name, site=site)

    def __repr__(self):
        return f"Ising(shape={self.shape}, periodic={self.periodic})"

    # -- lattice ---------------------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def num_sites(self) -> int:
        return math.prod(self.shape)

    @property
    def is_bipartite(self) -> bool:
        """True when the checkerboard is a proper colouring (open, or every periodic side even)."""
        return not self.periodic or all(d % 2 == 0 for d in self.shape)

    @property
    def colouring(self) -> np.ndarray:
        """Colour of every site, ``int`` array of ``shape``: no two neighbours share a colour
        (the checkerboard parity on bipartite lattices, a greedy colouring otherwise)."""
        return colouring(self.shape, self.periodic)

    @property
    def colour_masks(self) -> tuple:
        """One boolean mask of ``shape`` per colour class, in update order."""
        c = self.colouring
        return tuple(c == k for k in range(int(c.max()) + 1))

    def check_spins(self, s, name: str | None = None):
        """Return ``s`` as an array; raise when its trailing shape is not the lattice's and, with
        a ``name`` (the argument to blame), when concrete values are not all -1 or +1."""
        s = jnp.asarray(s)
        if s.shape[s.ndim - self.ndim :] != self.shape:
            raise ValueError(
                f"Ising: spins of shape {s.shape} do not end in the lattice shape {self.shape}."
            )
        if name is not None:
            check_in_set(name, s, (-1, 1), "Ising", "Spins are -1 or +1 (`ising.init_spins`).")
        return s

    # -- parameters ------------------------------------------------------------------------------

    @property
    def param_shapes(self) -> dict:
        return {"J": (), "h": None}

    def check_params(self, params) -> dict:
        """Raise naming the key when ``params`` is not ``{"J": scalar, "h": scalar or array
        broadcastable to shape}``; return it."""
        super().check_params(params)
        self._check_field("`params['h']`", params["h"])
        return params

    def _check_field(self, what, h):
        try:
            fits = jnp.broadcast_shapes(jnp.shape(h), self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{self!r}: {what} of shape {jnp.shape(h)} must be a scalar or broadcast to the "
                f"lattice shape {self.shape} (one model has one field; vmap over params for more)."
            )

    def init_params(self, rng_key=None, data=None, *, coupling=1.0, field=0.0, beta=1.0) -> dict:
        r"""``{"J": beta * coupling, "h": beta * field}`` (float32; ``field`` a scalar or an array
        broadcastable to ``shape``, ``beta > 0``). ``rng_key`` and ``data`` are unused."""
        check_positive("beta", beta)
        check_finite("beta", beta)
        check_finite("coupling", coupling)
        check_finite("field", field)
        if jnp.ndim(coupling) != 0:
            raise ValueError(f"Ising: `coupling` must be a scalar J, got shape {jnp.shape(coupling)}.")
        self._check_field("`field`", field)
        return {"J": jnp.asarray(beta * jnp.asarray(coupling), jnp.float32),
                "h": jnp.asarray(beta * jnp.asarray(field), jnp.float32)}

    # -- energies --------------------------------------------------------------------------------

    def bond_sum(self, s):
        r""":math:`B(s) = \sum_{\langle ij \rangle} s_i s_j`, each bond once (the sufficient
        statistic of ``J``); ``(..., *shape) -> (...)``."""
        s = self.check_spins(s)
        return bond_sum(s.astype(jnp.result_type(float, s.dtype)), self.ndim, self.periodic)

    def energy(self, params, s):
        r""":math:`E(s) = -J B(s) - \sum_i h_i s_i`; spins ``(..., *shape)`` (values in {-1, +1},
        any real dtype) -> energies ``(...)``."""
        s = self.check_spins(s, "s")
        x = s.astype(jnp.result_type(float, s.dtype))
        axes = tuple(range(x.ndim - self.ndim, x.ndim))
        return -params["J"] * self.bond_sum(x) - jnp.sum(params["h"] * x, axis=axes)

    def energy_per_site(self, params, s):
        """:math:`E(s) / N`, shape ``(...)``."""
        return self.energy(params, s) / self.num_sites

    def magnetization(self, s):
        r"""Mean spin :math:`M = \frac1N \sum_i s_i` (signed), shape ``(...)``; take ``abs``
        for the order parameter of a zero-field model."""
        s = self.check_spins(s)
        axes = tuple(range(s.ndim - self.ndim, s.ndim))
        return jnp.mean(s.astype(jnp.result_type(float, s.dtype)), axis=axes)

    def local_field(self, params, s):
        r""":math:`m_i = J \sum_{j \sim i} s_j + h_i` at every site, shape ``(..., *shape)``."""
        s = self.check_spins(s)
        nb = neighbor_sum(s.astype(jnp.result_type(float, s.dtype)), self.ndim, self.periodic)
        return params["J"] * nb + params["h"]

    def init_spins(self, rng_key, num_chains: int | None = None, kind: str = "random",
                   dtype=jnp.float32):
        """Initial spins, shape ``(num_chains, *shape)`` (or ``shape`` when ``num_chains`` is None).

        :param kind: ``"random"`` (independent fair coins: exact draws at infinite temperature) or
            ``"up"`` (all +1: the ordered state, quick to equilibrate below the critical point).
        """
        batch = () if num_chains is None else (check_int("num_chains", num_chains, 1),)
        if kind == "random":
            s = jnp.where(jax.random.bernoulli(rng_key, 0.5, batch + self.shape), 1, -1)
        elif kind == "up":
            s = jnp.ones(batch + self.shape)
        else:
            raise ValueError(f"Ising.init_spins: `kind` must be 'random' or 'up', got {kind!r}.")
        return s.astype(dtype)

    # -- NumPyro ---------------------------------------------------------------------------------

    def model(self, data=None, *, subsample_size: int | None = None):
        """A NumPyro model: ``numpyro.param`` sites ``f"{name}_J"`` and ``f"{name}_h"`` (scalar
        field; both start at 0) and the observed spin site ``self.site`` (this model's
        :meth:`distribution`) under a plate over the ``N`` lattices of ``data`` ``(N, *shape)``,
        subsampled to ``subsample_size`` per step when given."""
        params = {"J": numpyro.param(f"{self.name}_J", jnp.zeros(())),
                  "h": numpyro.param(f"{self.name}_h", jnp.zeros(()))}
        if data is not None and jnp.shape(data)[1:] != self.shape:
            raise ValueError(
                f"{self!r}.model: `data` must have shape (N, {', '.join(map(str, self.shape))}), "
                f"got {jnp.shape(data)}."
            )
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=self.ndim)
            numpyro.sample(self.site, self.distribution(params), obs=batch)

    # -- samplers --------------------------------------------------------------------------------

    def annealing_path(self, params) -> AnnealingPath:
        r"""The path :math:`f_b(s) = -b\,E_\theta(s)`, :math:`b \in [0, 1]`: base uniform spins
        (exact draws, :math:`\log Z_0 = N \log 2`), ``kernel(b)`` one colour-block Gibbs sweep
        at :math:`b` per step (:class:`~numpyro_ebm.sampling.block_gibbs.BlockGibbsState` with
        ``logdensity`` :math:`= f_b`, tracked; :class:`~numpyro_ebm.sampling.discrete.GibbsInfo`
        with the flip rate). The step keeps the spins' dtype and also takes a batch of lattices
        ``(..., *shape)`` without ``vmap``."""
        params = self.check_params(params)

        def logdensity_fn(beta, s):
            return -beta * self.energy(params, s)

        def kernel(beta):
            def init(position, rng_key=None):
                position = self.check_spins(position, "init_positions")
                return BlockGibbsState(position, logdensity_fn(beta, position))

            init.check_position = partial(self.check_spins, name="init_positions")

            def step(rng_key, state):
                s = state.position
                x = s.astype(jnp.result_type(float, s.dtype))
                y, energy, flips = colour_block_sweep(
                    rng_key, x, beta * params["J"], beta * params["h"], self.shape, self.periodic)
                rate = flips / self.num_sites
                return BlockGibbsState(y.astype(s.dtype), -energy), GibbsInfo(rate, rate)

            return SamplingAlgorithm(init, step)

        def sample_base(rng_key, num_chains):
            return self.init_spins(rng_key, num_chains)

        return AnnealingPath(logdensity_fn, kernel, sample_base, self.num_sites * math.log(2.0))

    def block_conditionals(self, params, beta=1.0):
        """One exact conditional ``(rng_key, s) -> s`` per colour class (at inverse temperature
        ``beta``), for :func:`numpyro_ebm.block_gibbs` (which then runs the chain of
        :meth:`kernel`, more slowly)."""
        params = self.check_params(params)

        def make(mask):
            def sample(rng_key, s):
                p_up = jax.nn.sigmoid(2.0 * beta * self.local_field(params, s))
                new = jnp.where(jax.random.uniform(rng_key, s.shape) < p_up, 1, -1)
                return jnp.where(mask, new.astype(s.dtype), s)

            return sample

        return [make(jnp.asarray(m)) for m in self.colour_masks]

    # -- partition function ----------------------------------------------------------------------

    def log_partition(self, params):
        r""":math:`\log Z = \log \sum_s e^{-E_\theta(s)}` by enumerating all :math:`2^N`
        configurations (:func:`numpyro_ebm.logz_exact`), for ``num_sites <= 24``; larger lattices
        raise ``NotImplementedError`` (use :meth:`logz_ais`). Jittable, differentiable in
        ``params``."""
        if self.num_sites > MAX_EXACT_SITES:
            raise NotImplementedError(
                f"Ising.log_partition: {self.num_sites} sites is too many to enumerate (at most "
                f"{MAX_EXACT_SITES}); estimate log Z with `ising.logz_ais(rng_key, params)`."
            )
        from numpyro_ebm.evaluation.partition import logz_exact

        params = self.check_params(params)
        return logz_exact(
            lambda s: self.energy(params, s.reshape((-1,) + self.shape)), self.num_sites, (-1, 1)
        )
