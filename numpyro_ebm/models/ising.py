r"""The Ising model on a hypercubic lattice (1-D ring, 2-D square lattice, ...), spins in {-1, +1}.

.. math::

    E(s) = -J \sum_{\langle ij \rangle} s_i s_j - \sum_i h_i s_i,
    \qquad \log p(s) = -\beta E(s) - \log Z(\beta)

with nearest-neighbour bonds :math:`\langle ij \rangle` (each counted once; periodic boundaries
wrap). Lower energy = more likely (aligned spins for :math:`J > 0`).

The lattice is bipartite (a checkerboard) when every periodic side is even, so the spins of one
colour are conditionally independent given the other and are redrawn in parallel:

.. math::

    p(s_i = +1 \mid s_{-i}) = \sigma(2\beta m_i) = \tfrac12\,(1 + \tanh \beta m_i),
    \qquad m_i = J \sum_{j \sim i} s_j + h_i .

:meth:`Ising.kernel` is that checkerboard block-Gibbs kernel, BlackJAX-shaped, fused into a few
array operations over the whole lattice (and over all chains under ``vmap``).

Also here: exact infinite-lattice references (Onsager 1944, Yang 1952) and image restoration with
an Ising prior (:func:`restoration_model`, :func:`restore_gibbs`, :func:`restore_icm`,
:func:`restore_mean_field`).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_int, check_positive, is_concrete
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.gibbs import BlockGibbsState, GibbsInfo

__all__ = [
    "Ising",
    "spin",
    "critical_beta",
    "onsager_magnetization",
    "onsager_energy_per_site",
    "flip_noise_strength",
    "binary_test_image",
    "flip_noise",
    "restoration_model",
    "posterior",
    "restore_gibbs",
    "restore_icm",
    "restore_mean_field",
]


# ----------------------------------------------------------------------------- spin support


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


# ----------------------------------------------------------------------------- lattice helpers


def _pad(x, axes, periodic: bool):
    """Pad ``x`` by one site on both sides of each of ``axes``: wrap-around or zeros."""
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis] = (1, 1)
    return jnp.pad(x, widths, mode="wrap" if periodic else "constant")


def _neighbor_sum(s, ndim: int, periodic: bool):
    """Sum over the 2*ndim nearest neighbours of every site; lattice = the last ``ndim`` axes.

    Built from one padded copy and slices (XLA on CPU fuses these far better than ``jnp.roll``).
    """
    axes = tuple(range(s.ndim - ndim, s.ndim))
    p = _pad(s, axes, periodic)
    total = 0.0
    for axis in axes:
        for offset in (-1, 1):
            index = [slice(None)] * s.ndim
            for a in axes:
                index[a] = slice(1, p.shape[a] - 1)
            index[axis] = slice(1 + offset, p.shape[axis] - 1 + offset)
            total = total + p[tuple(index)]
    return total


def _bond_sum(s, ndim: int, periodic: bool):
    """:math:`\\sum_{\\langle ij \\rangle} s_i s_j` over the last ``ndim`` axes, each bond once."""
    total = 0.0
    for axis in range(s.ndim - ndim, s.ndim):
        n = s.shape[axis]
        if periodic:
            prod = s * jnp.roll(s, -1, axis)
        else:
            prod = jax.lax.slice_in_dim(s, 0, n - 1, axis=axis) * jax.lax.slice_in_dim(
                s, 1, n, axis=axis
            )
        total = total + jnp.sum(prod, axis=tuple(range(s.ndim - ndim, s.ndim)))
    return total


def _parity(shape) -> np.ndarray:
    """Boolean checkerboard mask: True on sites whose index sum is even."""
    grids = np.indices(shape).sum(0)
    return (grids % 2) == 0


def _uniform_pm1(rng_key, shape, dtype):
    """Uniform(-1, 1) draws of ``shape`` (23 random mantissa bits, like ``jax.random.uniform``).

    For threefry keys (JAX's default) the bits come from ``threefry_2x32(key, 0..n-1)``, which
    yields two 32-bit words per threefry call; ``jax.random.bits`` with the default
    ``jax_threefry_partitionable`` makes one call per word and XORs the pair, twice the work.
    Other key types use ``jax.random.bits``.
    """
    n = math.prod(shape)
    typed = jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    if _threefry_2x32 is not None and (
        not typed or str(jax.random.key_impl(rng_key)) == "threefry2x32"
    ):
        data = jax.random.key_data(rng_key) if typed else rng_key
        bits = _threefry_2x32(data, jax.lax.iota(jnp.uint32, n)).reshape(shape)
    else:
        bits = jax.random.bits(rng_key, shape, jnp.uint32)
    one_to_two = jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32)
    return (2.0 * one_to_two - 3.0).astype(dtype)


try:  # the raw threefry hash (public in jax.extend); fall back to jax.random.bits without it
    from jax.extend.random import threefry_2x32 as _threefry_2x32
except ImportError:  # pragma: no cover
    _threefry_2x32 = None


# ----------------------------------------------------------------------------- the model


@jax.tree_util.register_pytree_node_class
class Ising:
    r"""Ising model on a ``shape`` lattice with spins :math:`s_i \in \{-1, +1\}`.

    :math:`E(s) = -J \sum_{\langle ij\rangle} s_i s_j - \sum_i h_i s_i`,
    :math:`\log p(s) = -\beta E(s)` (up to :math:`\log Z`).

    :param shape: lattice shape, e.g. ``(64, 64)`` (2-D) or ``(100,)`` / ``100`` (1-D ring).
    :param coupling: :math:`J` (scalar; ``> 0`` ferromagnetic).
    :param field: :math:`h`, a scalar or an array broadcastable to ``shape`` (a per-site field, as in
        image restoration).
    :param beta: inverse temperature :math:`\beta > 0`.
    :param bool periodic: periodic boundaries (a torus) or open (free) boundaries.

    ``coupling``, ``field`` and ``beta`` are pytree leaves: an ``Ising`` can be passed through
    ``jax.jit`` / ``jax.vmap`` (e.g. a sweep over temperatures in one compiled program).

    **Example**

    .. code-block:: python

        ising = Ising((64, 64), beta=0.5)
        result = numpyro_ebm.sample_chains(
            jax.random.key(0), ising.logdensity, ising.kernel,
            ising.init_spins(jax.random.key(1), num_chains=32), num_steps=1000)
        jnp.abs(ising.magnetization(result.positions)).mean()   # ~ onsager_magnetization(0.5)
    """

    def __init__(self, shape, coupling=1.0, field=0.0, beta=1.0, periodic: bool = True):
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
        check_positive("beta", beta)
        if jnp.ndim(coupling) != 0:
            raise ValueError(
                f"Ising: `coupling` must be a scalar J, got shape {jnp.shape(coupling)}."
            )
        try:
            jnp.broadcast_shapes(jnp.shape(field), shape)
        except ValueError as err:
            raise ValueError(
                f"Ising: `field` of shape {jnp.shape(field)} does not broadcast to the lattice "
                f"shape {shape}."
            ) from err
        if len(jnp.broadcast_shapes(jnp.shape(field), shape)) != len(shape):
            raise ValueError(
                f"Ising: `field` of shape {jnp.shape(field)} has more axes than the lattice "
                f"{shape}; one Ising model has one field (vmap over models for several)."
            )
        self.shape = shape
        self.periodic = bool(periodic)
        self.coupling = coupling
        self.field = field
        self.beta = beta

    # pytree -----------------------------------------------------------------
    def tree_flatten(self):
        return (self.coupling, self.field, self.beta), (self.shape, self.periodic)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.shape, obj.periodic = aux
        obj.coupling, obj.field, obj.beta = children
        return obj

    def __repr__(self):
        def show(x):
            return f"{float(x):g}" if is_concrete(x) and jnp.ndim(x) == 0 else f"array{jnp.shape(x)}"

        return (
            f"Ising(shape={self.shape}, coupling={show(self.coupling)}, field={show(self.field)}, "
            f"beta={show(self.beta)}, periodic={self.periodic})"
        )

    # basic quantities -------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def num_sites(self) -> int:
        return math.prod(self.shape)

    @property
    def is_bipartite(self) -> bool:
        """True when the checkerboard colouring is proper (every periodic side even)."""
        return not self.periodic or all(d % 2 == 0 for d in self.shape)

    def _check_spins(self, s):
        s = jnp.asarray(s)
        if s.shape[s.ndim - self.ndim :] != self.shape:
            raise ValueError(
                f"Ising: spins of shape {s.shape} do not end in the lattice shape {self.shape}."
            )
        return s

    def energy(self, s):
        r""":math:`E(s) = -J \sum_{\langle ij\rangle} s_i s_j - \sum_i h_i s_i`.

        :param s: spins, shape ``(..., *shape)``, values in {-1, +1} (any real dtype).
        :return: energies, shape ``(...)`` (without the factor :math:`\beta`).
        """
        s = self._check_spins(s)
        s = s.astype(jnp.result_type(float, s.dtype))
        axes = tuple(range(s.ndim - self.ndim, s.ndim))
        bonds = _bond_sum(s, self.ndim, self.periodic)
        return -self.coupling * bonds - jnp.sum(self.field * s, axis=axes)

    def logdensity(self, s):
        r""":math:`\log p(s) = -\beta E(s)` up to :math:`\log Z`; shape ``(...)``."""
        return -self.beta * self.energy(s)

    def energy_per_site(self, s):
        """:math:`E(s) / N`, shape ``(...)``."""
        return self.energy(s) / self.num_sites

    def magnetization(self, s):
        r"""Mean spin :math:`M = \frac1N \sum_i s_i` (signed), shape ``(...)``; take ``abs``
        for the order parameter of a zero-field model."""
        s = self._check_spins(s)
        axes = tuple(range(s.ndim - self.ndim, s.ndim))
        return jnp.mean(s.astype(jnp.result_type(float, s.dtype)), axis=axes)

    def local_field(self, s):
        r""":math:`m_i = J \sum_{j \sim i} s_j + h_i` at every site, shape ``(..., *shape)``."""
        s = self._check_spins(s)
        nb = _neighbor_sum(s.astype(jnp.result_type(float, s.dtype)), self.ndim, self.periodic)
        return self.coupling * nb + self.field

    def init_spins(self, rng_key, num_chains: int | None = None, kind: str = "random",
                   dtype=jnp.float32):
        """Initial spins, shape ``(num_chains, *shape)`` (or ``shape`` when ``num_chains`` is None).

        :param kind: ``"random"`` (independent fair coins: infinite temperature) or ``"up"`` (all
            +1: the ordered state, quick to equilibrate below the critical temperature).
        """
        batch = () if num_chains is None else (check_int("num_chains", num_chains, 1),)
        if kind == "random":
            s = jnp.where(jax.random.bernoulli(rng_key, 0.5, batch + self.shape), 1, -1)
        elif kind == "up":
            s = jnp.ones(batch + self.shape)
        else:
            raise ValueError(f"Ising.init_spins: `kind` must be 'random' or 'up', got {kind!r}.")
        return s.astype(dtype)

    # NumPyro site -----------------------------------------------------------
    def as_distribution(self) -> Unnormalized:
        r"""This model as a NumPyro site: ``Unnormalized(beta * energy, event_shape=shape,
        support=spin)``, i.e. ``log_prob(s) = -beta E(s)`` (unnormalized).

        Use it as a prior over a latent spin configuration (see :func:`restoration_model`) or as an
        observed site for training. It has no exact sampler; sample with :meth:`kernel`.
        """
        return Unnormalized(lambda s: self.beta * self.energy(s), self.shape, support=spin)

    # checkerboard Gibbs -----------------------------------------------------
    @property
    def _split_layout(self) -> bool:
        """2-D lattices with an even number of columns are swept in the two-colour layout."""
        return self.ndim == 2 and self.shape[1] % 2 == 0

    def _sweeps(self, rng_key, s, num_sweeps: int, track: bool):
        """``num_sweeps`` checkerboard sweeps of one or many lattices ``(..., *shape)``.

        Returns ``(spins, energy, flips)``: the new spins (dtype kept) and, when ``track``, the
        energy of the final spins (from local fields already at hand: every bond has exactly one
        endpoint of the second colour, so :math:`E = -J \\sum_{i\\ \\text{odd}} s_i n_i -
        \\sum_i h_i s_i` with :math:`n_i` the neighbour sum used to draw :math:`s_i`) and the
        number of spin changes, per lattice (``None`` otherwise).

        Each sweep draws one Uniform(-1, 1) number per site and sets
        :math:`s_i = +1` iff :math:`u_i < \\tanh(\\beta m_i)`. 2-D lattices with even width are
        kept in a two-colour layout (even sites ``A`` and odd sites ``B``, each ``(H, W/2)``)
        during the sweeps, so each half-sweep touches only its own colour; other shapes use
        full-lattice masks.
        """
        dtype = s.dtype
        ftype = jnp.result_type(float, dtype)
        batch = s.shape[: s.ndim - self.ndim]
        lattice = tuple(range(len(batch), s.ndim))
        beta_j = jnp.asarray(self.beta * self.coupling, ftype)
        field = jnp.broadcast_to(jnp.asarray(self.field, ftype), self.shape)
        x = s.astype(ftype)

        if self._split_layout:
            height, width = self.shape
            row_even = (jnp.arange(height) % 2 == 0)[:, None]

            def split(y):
                pairs = jnp.reshape(y, y.shape[:-1] + (width // 2, 2))
                p0, p1 = pairs[..., 0], pairs[..., 1]
                return jnp.where(row_even, p0, p1), jnp.where(row_even, p1, p0)

            def merge(a, b):
                pairs = jnp.stack([jnp.where(row_even, a, b), jnp.where(row_even, b, a)], -1)
                return jnp.reshape(pairs, pairs.shape[:-2] + (width,))

            def neighbours(other, left_on_even_rows):
                # colour A at (i, k) sits at column 2k + i % 2; its vertical neighbours are
                # other[i +- 1, k], its horizontal ones other[i, k] and other[i, k -+ 1].
                q = _pad(other, (other.ndim - 2, other.ndim - 1), self.periodic)
                up, down = q[..., :-2, 1:-1], q[..., 2:, 1:-1]
                left, right = q[..., 1:-1, :-2], q[..., 1:-1, 2:]
                side = jnp.where(row_even, left, right) if left_on_even_rows else jnp.where(
                    row_even, right, left
                )
                return up + down + other + side

            field_a, field_b = split(field)
            a, b = split(x)
            shape_half = a.shape

            def draw(u, nb, h):
                return jnp.where(u < jnp.tanh(beta_j * nb + self.beta * h), 1.0, -1.0).astype(
                    ftype
                )

            def sweep(carry, key):
                a, b, _, flips = carry
                u = _uniform_pm1(key, (2,) + shape_half, ftype)
                a_new = draw(u[0], neighbours(b, True), field_a)
                nb_b = neighbours(a_new, False)
                b_new = draw(u[1], nb_b, field_b)
                if track:
                    # without the barrier XLA may fuse the reductions with their producers and
                    # recompute the random draws for each (4x slower under vmap on CPU)
                    a_new, b_new, nb_b = jax.lax.optimization_barrier((a_new, b_new, nb_b))
                    half_axes = tuple(range(len(batch), a.ndim))
                    energy = -jnp.sum(
                        b_new * (self.coupling * nb_b + field_b) + field_a * a_new, half_axes
                    )
                    flips = flips + jnp.sum(a_new != a, half_axes) + jnp.sum(b_new != b, half_axes)
                else:
                    energy = None
                return (a_new, b_new, energy, flips), None

            init = (a, b, jnp.zeros(batch, ftype) if track else None,
                    jnp.zeros(batch, ftype) if track else None)
            if num_sweeps == 1:
                (a, b, energy, flips), _ = sweep(init, rng_key)
            else:
                keys = jax.random.split(rng_key, num_sweeps)
                (a, b, energy, flips), _ = jax.lax.scan(sweep, init, keys)
            return merge(a, b).astype(dtype), energy, flips

        even = jnp.asarray(_parity(self.shape))

        def sweep(carry, key):
            x, _, flips = carry
            u = _uniform_pm1(key, x.shape, ftype)  # each site is redrawn once per sweep
            nb = _neighbor_sum(x, self.ndim, self.periodic)
            x_new = jnp.where(u < jnp.tanh(beta_j * nb + self.beta * field), 1.0, -1.0)
            y = jnp.where(even, x_new.astype(ftype), x)
            nb = _neighbor_sum(y, self.ndim, self.periodic)
            y_new = jnp.where(u < jnp.tanh(beta_j * nb + self.beta * field), 1.0, -1.0)
            y = jnp.where(even, y, y_new.astype(ftype))
            if track:
                y, nb = jax.lax.optimization_barrier((y, nb))
                energy = -jnp.sum(
                    jnp.where(even, 0.0, y * (self.coupling * nb)) + field * y, lattice
                )
                flips = flips + jnp.sum(y != x, lattice)
            else:
                energy = None
            return (y, energy, flips), None

        init = (x, jnp.zeros(batch, ftype) if track else None,
                jnp.zeros(batch, ftype) if track else None)
        if num_sweeps == 1:
            (x, energy, flips), _ = sweep(init, rng_key)
        else:
            (x, energy, flips), _ = jax.lax.scan(sweep, init, jax.random.split(rng_key, num_sweeps))
        return x.astype(dtype), energy, flips

    def kernel(self, logdensity_fn=None, num_sweeps: int = 1) -> SamplingAlgorithm:
        r"""Checkerboard block Gibbs as a ``blackjax.SamplingAlgorithm`` (a kernel factory).

        One step = ``num_sweeps`` sweeps; a sweep redraws the even sites given the odd ones, then
        the odd sites given the even ones, each colour in parallel from
        :math:`p(s_i = +1 \mid s_{-i}) = \frac12 (1 + \tanh \beta m_i)`.

        The state is a :class:`~numpyro_ebm.sampling.gibbs.BlockGibbsState` (``position`` the
        spins of shape ``shape``, any real dtype, kept; ``logdensity`` :math:`-\beta E`, tracked
        at no extra cost) and the info a :class:`~numpyro_ebm.sampling.gibbs.GibbsInfo` (flip rate,
        also as ``acceptance_rate``). The step also works on a batch of lattices
        ``(..., *shape)`` directly, without ``vmap``.

        :param logdensity_fn: accepted so that ``ising.kernel`` is a factory
            ``logdensity_fn -> SamplingAlgorithm`` for :func:`numpyro_ebm.sample_chains`; the
            kernel always samples *this* model (pass ``ising.logdensity``).
        :param int num_sweeps: sweeps per step.
        """
        if not self.is_bipartite:
            raise ValueError(
                f"Ising.kernel: a periodic lattice of shape {self.shape} has an odd side, so the "
                "checkerboard colouring is not proper; use even sides or periodic=False (or the "
                "generic numpyro_ebm.gibbs kernel)."
            )
        num_sweeps = check_int("num_sweeps", num_sweeps, 1)
        model = self

        def init_fn(position, rng_key=None):
            position = model._check_spins(position)
            return BlockGibbsState(position, model.logdensity(position))

        def step_fn(rng_key, state):
            s, energy, flips = model._sweeps(rng_key, state.position, num_sweeps, track=True)
            rate = flips / (num_sweeps * model.num_sites)
            return BlockGibbsState(s, -model.beta * energy), GibbsInfo(rate, rate)

        return SamplingAlgorithm(init_fn, step_fn)

    def block_conditionals(self):
        """The two checkerboard conditionals ``(rng_key, s) -> s`` (even sites, then odd sites),
        for :func:`numpyro_ebm.block_gibbs` (which then runs the same chain as :meth:`kernel`,
        more slowly)."""
        model = self

        def make(colour):
            mask = jnp.asarray(_parity(model.shape) == colour)

            def sample(rng_key, s):
                p_up = jax.nn.sigmoid(2.0 * model.beta * model.local_field(s))
                new = jnp.where(jax.random.uniform(rng_key, s.shape) < p_up, 1, -1)
                return jnp.where(mask, new.astype(s.dtype), s)

            return sample

        return [make(True), make(False)]

    def sample(self, rng_key, num_chains: int, num_sweeps: int, init: str = "random",
               dtype=jnp.float32):
        """Spins after ``num_sweeps`` checkerboard sweeps from ``init`` (``"random"``/``"up"``),
        shape ``(num_chains, *shape)``. A thin wrapper over :meth:`kernel`, vectorized over chains
        without ``vmap`` (the sweep works on the leading axes directly)."""
        num_sweeps = check_int("num_sweeps", num_sweeps, 0)
        key_init, key_run = jax.random.split(rng_key)
        s = self.init_spins(key_init, num_chains, init, dtype)
        return _run_sweeps(self, key_run, s, num_sweeps)


@partial(jax.jit, static_argnames=("num_sweeps",))
def _run_sweeps(model: Ising, rng_key, s, num_sweeps: int):
    if num_sweeps == 0:
        return s
    return model._sweeps(rng_key, s, num_sweeps, track=False)[0]


# ----------------------------------------------------------------------------- exact references


critical_beta = 0.5 * math.log(1.0 + math.sqrt(2.0))
"""Critical inverse temperature of the 2-D square lattice with J = 1: ½ ln(1 + √2) ≈ 0.4407."""


def _ellipk(k):
    """Complete elliptic integral of the first kind K(k) (modulus k), by the AGM: K = π / (2 AGM)."""
    a, b = jnp.ones_like(k), jnp.sqrt(jnp.clip(1.0 - k * k, 0.0, None))
    for _ in range(12):  # quadratic convergence: 12 steps reach float64 precision for k < 1
        a, b = 0.5 * (a + b), jnp.sqrt(a * b)
    return jnp.pi / (2.0 * a)


def onsager_magnetization(beta, coupling=1.0):
    r"""Spontaneous magnetization per spin of the infinite 2-D square lattice (Yang 1952).

    :math:`M(\beta) = (1 - \sinh(2\beta J)^{-4})^{1/8}` for :math:`\beta > \beta_c`, else 0.
    Works on arrays; jittable.
    """
    beta = jnp.asarray(beta, jnp.result_type(float))
    x = 1.0 - jnp.sinh(2.0 * beta * coupling) ** -4
    return jnp.where(x > 0, jnp.power(jnp.clip(x, 0.0, None), 0.125), 0.0)


def onsager_energy_per_site(beta, coupling=1.0):
    r"""Internal energy per site of the infinite 2-D square lattice, zero field (Onsager 1944).

    .. math::

        u(\beta) = -J \coth(2\beta J)\Big[1 + \tfrac{2}{\pi}\,(2\tanh^2(2\beta J) - 1)\,K(\kappa)
        \Big],\qquad \kappa = \frac{2\sinh(2\beta J)}{\cosh^2(2\beta J)},

    :math:`K` the complete elliptic integral of the first kind (computed by the arithmetic-geometric
    mean). At :math:`\beta_c` the bracket is finite (:math:`u = -\sqrt2 J`); the logarithmic
    singularity of :math:`K` is cancelled by the vanishing prefactor. Jittable.
    """
    beta = jnp.asarray(beta, jnp.result_type(float))
    t = 2.0 * beta * coupling
    kappa = jnp.clip(2.0 * jnp.sinh(t) / jnp.cosh(t) ** 2, 0.0, 1.0)
    factor = 2.0 * jnp.tanh(t) ** 2 - 1.0
    at_critical = jnp.abs(factor) < 1e-6
    correction = jnp.where(at_critical, 0.0, factor * _ellipk(jnp.where(at_critical, 0.5, kappa)))
    return -coupling / jnp.tanh(t) * (1.0 + 2.0 / jnp.pi * correction)


# ----------------------------------------------------------------------------- image restoration


def flip_noise_strength(flip_prob):
    r""":math:`\eta = \tfrac12 \log\frac{1-p}{p}`: with pixels flipped independently with
    probability :math:`p`, :math:`\log p(x \mid y) = \eta \sum_i x_i y_i + \text{const}`."""
    if is_concrete(flip_prob) and not 0.0 < float(flip_prob) < 0.5:
        raise ValueError(f"`flip_prob` must be in (0, 0.5), got {flip_prob!r}.")
    return 0.5 * jnp.log((1.0 - flip_prob) / flip_prob)


def binary_test_image(size: int = 64):
    """A deterministic binary test image, spins of shape ``(size, size)`` (+1 = foreground):
    a filled rectangle, a disk, a ring and a triangle on a -1 background."""
    size = check_int("size", size, 8)
    i, j = np.mgrid[0:size, 0:size] / size
    img = (0.08 < i) & (i < 0.42) & (0.08 < j) & (j < 0.38)  # rectangle
    img |= (i - 0.27) ** 2 + (j - 0.72) ** 2 < 0.17**2  # disk
    r2 = (i - 0.72) ** 2 + (j - 0.27) ** 2
    img |= (0.09**2 < r2) & (r2 < 0.18**2)  # ring
    img |= (i > 0.55) & (i < 0.92) & (j > 0.55) & (j - 0.55 < (i - 0.55))  # triangle
    return jnp.asarray(np.where(img, 1.0, -1.0), jnp.float32)


def flip_noise(rng_key, image, flip_prob: float):
    """Flip each spin of ``image`` independently with probability ``flip_prob``."""
    flips = jax.random.bernoulli(rng_key, flip_prob, jnp.shape(image))
    return jnp.where(flips, -image, image)


def restoration_model(noisy, prior: Ising, flip_prob: float):
    r"""NumPyro model for Ising image restoration: hidden clean spins ``y``, observed noisy ``x``.

    .. math::

        y \sim \text{Ising prior } (\log p(y) = -\beta E_{\text{prior}}(y)),\qquad
        x_i \mid y_i = \begin{cases} y_i & 1 - p \\ -y_i & p \end{cases}

    so that the posterior is again an Ising model,
    :math:`\log p(y \mid x) = -\beta E_{\text{prior}}(y) + \eta \sum_i x_i y_i + \text{const}`,
    :math:`\eta =` :func:`flip_noise_strength` ``(p)``; i.e. the energy
    :math:`E(y \mid x) = -\eta \sum_i x_i y_i - \beta J \sum_{\langle ij\rangle} y_i y_j` (with
    :math:`\beta` absorbed): :func:`posterior` builds it.

    :param noisy: observed spins ``x``, shape ``prior.shape``, values in {-1, +1}.
    :param prior: an :class:`Ising` prior over the clean image.
    :param float flip_prob: the noise's flip probability :math:`p`.
    """
    y = numpyro.sample("y", prior.as_distribution())
    probs_same = jnp.where(y > 0, 1.0 - flip_prob, flip_prob)  # P(x_i = +1 | y_i)
    numpyro.sample(
        "x",
        dist.Bernoulli(probs=probs_same).to_event(prior.ndim),
        obs=(jnp.asarray(noisy) > 0).astype(jnp.float32),
    )
    return y


def posterior(noisy, prior: Ising, flip_prob: float) -> Ising:
    r"""The posterior of :func:`restoration_model` as an :class:`Ising` model:
    same coupling and :math:`\beta`, field :math:`h + \eta x / \beta`."""
    noisy = prior._check_spins(noisy)
    eta = flip_noise_strength(flip_prob)
    field = prior.field + eta * noisy.astype(jnp.float32) / prior.beta
    return Ising(prior.shape, prior.coupling, field, prior.beta, prior.periodic)


def restore_gibbs(rng_key, noisy, prior: Ising, flip_prob: float, num_sweeps: int = 200,
                  num_burn: int = 50, num_chains: int = 8):
    r"""Posterior-mean restoration by checkerboard Gibbs sampling on :func:`posterior`.

    Runs ``num_chains`` chains (started at the noisy image) for ``num_burn + num_sweeps`` sweeps,
    averages the spins over the last ``num_sweeps`` sweeps and all chains.

    :return: ``(restored, mean)``: ``sign`` of the posterior mean (the maximizer of the posterior
        marginals: minimum expected pixel error) and the posterior mean :math:`E[y_i \mid x]`.
    """
    num_sweeps = check_int("num_sweeps", num_sweeps, 1)
    num_burn = check_int("num_burn", num_burn, 0)
    num_chains = check_int("num_chains", num_chains, 1)
    post = posterior(noisy, prior, flip_prob)
    mean = _posterior_mean(post, rng_key, jnp.asarray(noisy, jnp.float32), num_sweeps, num_burn,
                           num_chains)
    return jnp.where(mean >= 0, 1.0, -1.0), mean


@partial(jax.jit, static_argnames=("num_sweeps", "num_burn", "num_chains"))
def _posterior_mean(post: Ising, rng_key, noisy, num_sweeps, num_burn, num_chains):
    s = jnp.broadcast_to(noisy, (num_chains,) + noisy.shape)
    key_burn, key_run = jax.random.split(rng_key)
    s = _run_sweeps(post, key_burn, s, num_burn) if num_burn else s

    def body(carry, key):
        s, total = carry
        s = post._sweeps(key, s, 1, track=False)[0]
        return (s, total + s.mean(0)), None

    (s, total), _ = jax.lax.scan(
        body, (s, jnp.zeros_like(noisy)), jax.random.split(key_run, num_sweeps)
    )
    return total / num_sweeps


def restore_icm(noisy, prior: Ising, flip_prob: float, max_sweeps: int = 50):
    r"""Iterated conditional modes (Besag 1986): set each spin to its conditional mode
    :math:`y_i = \operatorname{sign}(m_i)` of the posterior, colour by colour (a coordinate descent
    on :math:`E(y \mid x)`), from :math:`y = x` until no spin changes or ``max_sweeps``.

    :return: ``(restored, num_sweeps)``, a local minimum of the posterior energy.
    """
    max_sweeps = check_int("max_sweeps", max_sweeps, 1)
    post = posterior(noisy, prior, flip_prob)
    return _icm(post, jnp.asarray(noisy, jnp.float32), max_sweeps)


@partial(jax.jit, static_argnames=("max_sweeps",))
def _icm(post: Ising, y, max_sweeps):
    even = jnp.asarray(_parity(post.shape))

    def half(y, mask):
        m = post.local_field(y)
        mode = jnp.where(m > 0, 1.0, jnp.where(m < 0, -1.0, y))  # ties keep the current spin
        return jnp.where(mask, mode, y)

    def body(carry):
        y, _, n = carry
        new = half(half(y, even), ~even)
        return new, jnp.any(new != y), n + 1

    y, _, n = jax.lax.while_loop(
        lambda c: c[1] & (c[2] < max_sweeps), body, (y, jnp.asarray(True), jnp.asarray(0))
    )
    return y, n


def restore_mean_field(noisy, prior: Ising, flip_prob: float, num_iters: int = 100,
                       damping: float = 0.5):
    r"""Naive mean-field restoration: iterate :math:`\mu_i \leftarrow \tanh(\beta\,(J \sum_{j\sim i}
    \mu_j + h_i))` on the posterior (fields :math:`h_i` include :math:`\eta x_i / \beta`), from
    :math:`\mu = x`, with damping :math:`\mu \leftarrow d\,\mu + (1-d)\,\mu_{\text{new}}`.

    :return: ``(restored, mu)``: ``sign(mu)`` and the mean-field magnetizations :math:`\mu_i`.
    """
    num_iters = check_int("num_iters", num_iters, 1)
    if not 0.0 <= float(damping) < 1.0:
        raise ValueError(f"`damping` must be in [0, 1), got {damping!r}.")
    post = posterior(noisy, prior, flip_prob)
    mu = _mean_field(post, jnp.asarray(noisy, jnp.float32), num_iters, damping)
    return jnp.where(mu >= 0, 1.0, -1.0), mu


@partial(jax.jit, static_argnames=("num_iters",))
def _mean_field(post: Ising, mu, num_iters, damping):
    def body(mu, _):
        new = jnp.tanh(post.beta * post.local_field(mu))
        return damping * mu + (1.0 - damping) * new, None

    mu, _ = jax.lax.scan(body, mu, None, length=num_iters)
    return mu
