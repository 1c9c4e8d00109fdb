# Over ~400 lines on purpose: two models (GraphIsing, Potts) sharing one graph base class (adjacency,
# colouring, colour-class sweeps, enumeration); the length is mostly their docstrings.
r"""Discrete models on arbitrary graphs: the Ising model with per-edge couplings
(:class:`GraphIsing`) and the :math:`q`-state Potts model (:class:`Potts`, on a graph or a
lattice), each with an exact colour-block Gibbs sampler.

A graph is a symmetric ``(N, N)`` weighted adjacency matrix :math:`w` with zero diagonal
(:math:`w_{ij} \neq 0` is an edge with coupling weight :math:`w_{ij}`):

.. math::

    E^{\text{Ising}}(s) = -J \sum_{i<j} w_{ij}\, s_i s_j - \sum_i h_i s_i,
    \qquad s_i \in \{-1, +1\},

    E^{\text{Potts}}(x) = -J \sum_{i<j} w_{ij}\, [x_i = x_j] - \sum_i h_{i, x_i},
    \qquad x_i \in \{0, \dots, q-1\}.

**Sampler.** A proper colouring of the graph (:func:`graph_colouring`, greedy, largest degree
first) splits the nodes into classes without internal edges; the nodes of one class are
conditionally independent given the others and are redrawn in parallel from

.. math::

    p(s_i = +1 \mid s_{-i}) = \sigma(2 m_i),\quad m_i = J \sum_j w_{ij} s_j + h_i;\qquad
    p(x_i = k \mid x_{-i}) \propto \exp\Big(J \sum_j w_{ij} [x_j = k] + h_{i,k}\Big).

At inverse temperature :math:`b` (the annealing path :math:`f_b = -bE`, base uniform) the
parameters are scaled by :math:`b`. ``log_partition`` enumerates small graphs.

**Example**

.. code-block:: python

    adjacency = lattice_adjacency((4, 4), periodic=True)       # or any symmetric (N, N) matrix
    g = GraphIsing(adjacency)
    params = g.init_params(beta=0.4)
    result = g.sample(jax.random.key(0), params, num_chains=64, num_steps=200)
    potts = Potts(3, shape=(8, 8))                                # 3-state Potts on a torus
    x = potts.sample(jax.random.key(1), potts.init_params(beta=1.0), 16, 100).positions
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_finite, check_int, check_positive
from numpyro_ebm.models.base import EnergyModel
from numpyro_ebm.models.ising import spin
from numpyro_ebm.models.lattice import colouring as lattice_colouring
from numpyro_ebm.sampling.annealing import AnnealingPath
from numpyro_ebm.sampling.block_gibbs import BlockGibbsState
from numpyro_ebm.sampling.discrete import GibbsInfo

__all__ = ["GraphIsing", "Potts", "graph_colouring", "lattice_adjacency"]

MAX_EXACT_CONFIGURATIONS = 2**22
"""Most configurations ``log_partition`` enumerates."""


def lattice_adjacency(shape, periodic: bool = True) -> np.ndarray:
    """The ``(N, N)`` adjacency of a hypercubic lattice of ``shape`` (nodes in C order), the
    bonds of :class:`~numpyro_ebm.models.Ising`: a periodic side of length 2 counts both bonds
    (weight 2)."""
    shape = tuple(int(d) for d in ((shape,) if isinstance(shape, int) else shape))
    n = math.prod(shape)
    index = np.arange(n).reshape(shape)
    w = np.zeros((n, n), np.float32)
    for axis, d in enumerate(shape):
        nxt = np.roll(index, -1, axis)
        keep = np.ones(shape, bool)
        if not periodic:
            sl = [slice(None)] * len(shape)
            sl[axis] = d - 1
            keep[tuple(sl)] = False
        for i, j in zip(index[keep], nxt[keep]):
            w[i, j] += 1.0
            w[j, i] += 1.0
    return w


def graph_colouring(adjacency) -> np.ndarray:
    """A proper colouring of the graph of ``adjacency`` (nonzero off-diagonal entries are edges):
    an ``int`` array ``(N,)``, greedy in order of decreasing degree (Welsh-Powell), at most
    ``max degree + 1`` colours."""
    a = np.asarray(adjacency) != 0
    n = a.shape[0]
    colours = np.full(n, -1)
    for i in np.argsort(-a.sum(1), kind="stable"):
        taken = set(colours[a[i]].tolist())
        colours[i] = min(c for c in range(n + 1) if c not in taken)
    return colours


def _check_adjacency(owner, adjacency) -> np.ndarray:
    try:
        w = np.asarray(adjacency, np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{owner}: `adjacency` must be a concrete (N, N) array.") from err
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
        raise ValueError(f"{owner}: `adjacency` must be a square (N, N) matrix with N >= 2, got "
                         f"shape {w.shape}.")
    if not np.all(np.isfinite(w)) or not np.allclose(w, w.T) or np.any(np.diag(w) != 0):
        raise ValueError(f"{owner}: `adjacency` must be finite, symmetric, with a zero diagonal "
                         "(w[i, j] = w[j, i] is the coupling weight of edge i-j, 0 for no edge).")
    return w.astype(np.float32)


def _hashable(w):
    """The adjacency as hashable pytree aux data."""
    return (w.tobytes(), w.shape)


def _unhash(aux):
    return None if aux is None else np.frombuffer(aux[0], np.float32).reshape(aux[1])


class _GraphModel(EnergyModel):
    """Shared structure of the graph models: the adjacency, event shape, colouring."""

    def _set_graph(self, owner, adjacency, shape, periodic):
        if adjacency is None and shape is None:
            raise ValueError(f"{owner}: pass `adjacency` (an (N, N) matrix) or a lattice `shape`.")
        if adjacency is not None and shape is not None:
            raise ValueError(f"{owner}: pass either `adjacency` or `shape`, not both.")
        if shape is not None:
            shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
            if not shape or any(d < 2 for d in shape):
                raise ValueError(f"{owner}: `shape` must be sizes >= 2, got {shape!r}.")
            self.adjacency = lattice_adjacency(shape, periodic)
            self.colouring = lattice_colouring(shape, bool(periodic)).ravel()
            self.event_shape = shape
        else:
            self.adjacency = _check_adjacency(owner, adjacency)
            self.colouring = graph_colouring(self.adjacency)
            self.event_shape = (self.adjacency.shape[0],)
        self.lattice = None if shape is None else (shape, bool(periodic))

    @property
    def num_nodes(self) -> int:
        return self.adjacency.shape[0]

    @property
    def colour_masks(self) -> tuple:
        """One boolean mask of ``event_shape`` per colour class (no edge inside a class)."""
        return tuple((self.colouring == k).reshape(self.event_shape)
                     for k in range(int(self.colouring.max()) + 1))

    def _flat(self, x):
        x = jnp.asarray(x)
        k = len(self.event_shape)
        if x.shape[x.ndim - k:] != self.event_shape:
            raise ValueError(f"{self!r}: a configuration of shape {x.shape} does not end in the "
                             f"event shape {self.event_shape}.")
        return jnp.reshape(x, x.shape[: x.ndim - k] + (self.num_nodes,))

    def _scalar_coupling(self, coupling):
        check_finite("coupling", coupling)
        if jnp.ndim(coupling) != 0:
            raise ValueError(f"{self!r}: `coupling` must be a scalar J, got shape "
                             f"{jnp.shape(coupling)}.")

    def _sweep_path(self, params, logdensity_fn, update_class, sample_base, log_z0):
        """The annealing path whose ``kernel(b)`` sweeps the colour classes with
        ``update_class(key, x_flat, mask, b)``."""
        masks = [jnp.asarray(self.colouring == k) for k in range(int(self.colouring.max()) + 1)]

        def kernel(beta):
            def init(position, rng_key=None):
                return BlockGibbsState(position, logdensity_fn(beta, position))

            def step(rng_key, state):
                x = self._flat(state.position)
                y = x
                for key, mask in zip(jax.random.split(rng_key, len(masks)), masks):
                    y = update_class(key, y, mask, beta)
                flips = jnp.mean((y != x).astype(jnp.result_type(float)), -1)
                position = jnp.reshape(y, state.position.shape)
                return BlockGibbsState(position, logdensity_fn(beta, position)), GibbsInfo(
                    flips, flips)

            return SamplingAlgorithm(init, step)

        return AnnealingPath(logdensity_fn, kernel, sample_base, log_z0)

    def block_conditionals(self, params, beta=1.0):
        """One exact conditional ``(rng_key, x) -> x`` per colour class (at inverse temperature
        ``beta``), for :func:`numpyro_ebm.block_gibbs` and
        :func:`~numpyro_ebm.sampling.clamp.clamped_kernel`; ``x`` of shape
        ``(..., *event_shape)``."""
        update = self._class_update(self.check_params(params))

        def make(mask):
            def sample(rng_key, x):
                x = jnp.asarray(x)
                return jnp.reshape(update(rng_key, self._flat(x), mask, beta), x.shape)

            return sample

        return [make(jnp.asarray(self.colouring == k))
                for k in range(int(self.colouring.max()) + 1)]

    def _svi_model(self, data, subsample_size, params):
        if data is not None and tuple(jnp.shape(data)[1:]) != self.event_shape:
            raise ValueError(f"{self!r}.model: `data` must have shape (N, *{self.event_shape}), "
                             f"got {jnp.shape(data)}.")
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=len(self.event_shape))
            numpyro.sample(self.site, self.distribution(params), obs=batch)

    def _log_partition(self, params, values):
        from numpyro_ebm.evaluation.partition import logz_exact

        total = len(values) ** self.num_nodes
        if total > MAX_EXACT_CONFIGURATIONS:
            raise NotImplementedError(
                f"{type(self).__name__}.log_partition: {len(values)}^{self.num_nodes} "
                f"configurations is too many to enumerate (at most {MAX_EXACT_CONFIGURATIONS}); "
                "estimate log Z with `model.logz_ais(rng_key, params)`."
            )
        params = self.check_params(params)
        return logz_exact(
            lambda x: self.energy(params, x.reshape((-1,) + self.event_shape)), self.num_nodes,
            values, chunk_size=min(65_536, total))


@jax.tree_util.register_pytree_node_class
class GraphIsing(_GraphModel):
    r"""Ising model on any graph: spins :math:`s_i \in \{-1, +1\}` on the nodes, coupling
    :math:`J w_{ij}` on each edge (module docstring).

    :param adjacency: symmetric ``(N, N)`` matrix with zero diagonal, the per-edge coupling
        weights :math:`w_{ij}` (0 = no edge); or
    :param shape: a lattice shape instead (``lattice_adjacency(shape, periodic)``; the event
        shape is then ``shape``, and the model equals :class:`~numpyro_ebm.models.Ising`).
    :param bool periodic: periodic boundaries of a lattice ``shape``.
    :param str name: prefix of the ``numpyro.param`` sites of :meth:`model`.
    :param str site: observed site of :meth:`model` (default ``f"{name}_s"``).

    Parameters ``{"J": scalar, "h": scalar or (N,) / event-shaped field}``.
    """

    support = spin

    def __init__(self, adjacency=None, *, shape=None, periodic: bool = True,
                 name: str = "graph_ising", site: str | None = None):
        self._set_graph("GraphIsing", adjacency, shape, periodic)
        self._init_args = (_hashable(self.adjacency) if shape is None else None, shape, periodic)
        self.set_names(name, site, "s")

    def tree_flatten(self):
        return (), (self._init_args, self.name, self.site)

    @classmethod
    def tree_unflatten(cls, aux, children):
        (adjacency, shape, periodic), name, site = aux
        return cls(_unhash(adjacency), shape=shape, periodic=periodic, name=name, site=site)

    def __repr__(self):
        return f"GraphIsing(num_nodes={self.num_nodes})"

    @property
    def param_shapes(self) -> dict:
        return {"J": (), "h": None}

    def check_params(self, params) -> dict:
        super().check_params(params)
        try:
            ok = jnp.broadcast_shapes(jnp.shape(params["h"]), self.event_shape) == self.event_shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{self!r}: `params['h']` of shape {jnp.shape(params['h'])} must be "
                             f"a scalar or broadcast to the event shape {self.event_shape}.")
        return params

    def init_params(self, rng_key=None, data=None, *, coupling=1.0, field=0.0, beta=1.0) -> dict:
        r"""``{"J": beta * coupling, "h": beta * field}`` (float32)."""
        check_positive("beta", beta)
        self._scalar_coupling(coupling)
        check_finite("field", field)
        params = {"J": jnp.asarray(beta * jnp.asarray(coupling), jnp.float32),
                  "h": jnp.asarray(beta * jnp.asarray(field), jnp.float32)}
        return self.check_params(params)

    def energy(self, params, s):
        r""":math:`E(s) = -J \sum_{i<j} w_{ij} s_i s_j - \sum_i h_i s_i`; ``(..., *event_shape)
        -> (...)``."""
        x = self._flat(s)
        x = x.astype(jnp.result_type(float, x.dtype))
        w = jnp.asarray(self.adjacency, x.dtype)
        h = jnp.reshape(jnp.broadcast_to(params["h"], self.event_shape), (-1,))
        return -params["J"] * 0.5 * jnp.sum((x @ w) * x, -1) - jnp.sum(h * x, -1)

    def local_field(self, params, s):
        r""":math:`m_i = J \sum_j w_{ij} s_j + h_i`, shape of ``s``."""
        x = self._flat(s).astype(jnp.result_type(float))
        h = jnp.reshape(jnp.broadcast_to(params["h"], self.event_shape), (-1,))
        return jnp.reshape(params["J"] * x @ jnp.asarray(self.adjacency) + h, jnp.shape(s))

    def init_spins(self, rng_key, num_chains: int | None = None, dtype=jnp.float32):
        """Uniform random spins ``(num_chains, *event_shape)`` (or ``event_shape``)."""
        batch = () if num_chains is None else (check_int("num_chains", num_chains, 1),)
        return jnp.where(jax.random.bernoulli(rng_key, 0.5, batch + self.event_shape), 1.0,
                         -1.0).astype(dtype)

    def model(self, data=None, *, subsample_size: int | None = None):
        """SVI model: ``numpyro.param`` sites ``f"{name}_J"``, ``f"{name}_h"`` (scalars) and the
        observed spin site under a plate over ``data`` ``(N, *event_shape)``."""
        params = {"J": numpyro.param(f"{self.name}_J", jnp.zeros(())),
                  "h": numpyro.param(f"{self.name}_h", jnp.zeros(()))}
        self._svi_model(data, subsample_size, params)

    def annealing_path(self, params) -> AnnealingPath:
        r""":math:`f_b = -bE`, base uniform spins (:math:`\log Z_0 = N\log 2`), ``kernel(b)`` one
        colour-class Gibbs sweep at :math:`b`; positions ``(..., *event_shape)``."""
        params = self.check_params(params)

        def logdensity_fn(beta, s):
            return -beta * self.energy(params, s)

        return self._sweep_path(params, logdensity_fn, self._class_update(params),
                                lambda key, n: self.init_spins(key, n),
                                self.num_nodes * math.log(2.0))

    def _class_update(self, params):
        h = jnp.reshape(jnp.broadcast_to(params["h"], self.event_shape), (-1,))
        w = jnp.asarray(self.adjacency)

        def update_class(key, x, mask, beta):
            xf = x.astype(jnp.result_type(float, x.dtype))
            m = beta * (params["J"] * xf @ w + h)
            new = jnp.where(jax.random.uniform(key, x.shape) < jax.nn.sigmoid(2.0 * m), 1, -1)
            return jnp.where(mask, new.astype(x.dtype), x)

        return update_class

    def log_partition(self, params):
        """Exact :math:`\\log Z` by enumeration (at most 2^22 configurations)."""
        return self._log_partition(params, (-1, 1))


@jax.tree_util.register_pytree_node_class
class Potts(_GraphModel):
    r"""The :math:`q`-state Potts model on a graph or a lattice (module docstring); states
    :math:`x_i \in \{0, \dots, q-1\}` (any real or integer dtype).

    :param int num_states: :math:`q \geq 2`.
    :param adjacency: symmetric ``(N, N)`` per-edge coupling weights (zero diagonal); or
    :param shape: a lattice shape (nearest-neighbour bonds, ``periodic`` boundaries).
    :param str name: prefix of the ``numpyro.param`` sites of :meth:`model`.
    :param str site: observed site of :meth:`model` (default ``f"{name}_x"``).

    Parameters ``{"J": scalar, "h": field broadcastable to (*event_shape, q)}`` (``h[..., k]``
    favours state ``k``).
    """

    def __init__(self, num_states: int, adjacency=None, *, shape=None, periodic: bool = True,
                 name: str = "potts", site: str | None = None):
        self.num_states = check_int("num_states", num_states, 2)
        self._set_graph("Potts", adjacency, shape, periodic)
        self._init_args = (num_states, _hashable(self.adjacency) if shape is None else None, shape,
                           periodic)
        self.support = constraints.integer_interval(0, self.num_states - 1)
        self.set_names(name, site, "x")

    def tree_flatten(self):
        return (), (self._init_args, self.name, self.site)

    @classmethod
    def tree_unflatten(cls, aux, children):
        (q, adjacency, shape, periodic), name, site = aux
        return cls(q, _unhash(adjacency), shape=shape, periodic=periodic, name=name, site=site)

    def __repr__(self):
        return f"Potts(num_states={self.num_states}, num_nodes={self.num_nodes})"

    @property
    def param_shapes(self) -> dict:
        return {"J": (), "h": None}

    def _field(self, params):
        full = self.event_shape + (self.num_states,)
        try:
            h = jnp.broadcast_to(params["h"], full)
        except ValueError as err:
            raise ValueError(f"{self!r}: `params['h']` of shape {jnp.shape(params['h'])} must "
                             f"broadcast to (*event_shape, q) = {full}.") from err
        return jnp.reshape(h, (self.num_nodes, self.num_states))

    def check_params(self, params) -> dict:
        super().check_params(params)
        self._field(params)
        return params

    def init_params(self, rng_key=None, data=None, *, coupling=1.0, field=0.0, beta=1.0) -> dict:
        r"""``{"J": beta * coupling, "h": beta * field}`` (``field`` broadcastable to
        ``(*event_shape, q)``; a scalar becomes ``(q,)``, the shape :meth:`model` learns)."""
        check_positive("beta", beta)
        self._scalar_coupling(coupling)
        check_finite("field", field)
        field = jnp.asarray(field)
        if field.ndim == 0:
            field = jnp.broadcast_to(field, (self.num_states,))
        params = {"J": jnp.asarray(beta * jnp.asarray(coupling), jnp.float32),
                  "h": jnp.asarray(beta * field, jnp.float32)}
        return self.check_params(params)

    def one_hot(self, x):
        """``(..., N, q)`` indicators of the states of the flattened nodes."""
        return jax.nn.one_hot(self._flat(x).astype(jnp.int32), self.num_states)

    def energy(self, params, x):
        r""":math:`E(x) = -J \sum_{i<j} w_{ij} [x_i = x_j] - \sum_i h_{i, x_i}`;
        ``(..., *event_shape) -> (...)``."""
        return self._energy_flat_onehot(params, self.one_hot(x))

    def _energy_flat_onehot(self, params, onehot):
        w = jnp.asarray(self.adjacency, onehot.dtype)
        same = 0.5 * jnp.sum(onehot * jnp.einsum("ij,...jk->...ik", w, onehot), (-2, -1))
        return -params["J"] * same - jnp.sum(onehot * self._field(params), (-2, -1))

    def logdensity_onehot(self, params, onehot):
        r""":math:`-E` of one-hot states ``(..., *event_shape, q)`` (floats; equal to
        :meth:`logdensity` at ``argmax``), differentiable in ``onehot``: the log density of the
        gradient-based categorical samplers (:func:`numpyro_ebm.discrete_langevin`)."""
        onehot = jnp.asarray(onehot)
        k = len(self.event_shape) + 1
        if onehot.shape[onehot.ndim - k:] != self.event_shape + (self.num_states,):
            raise ValueError(f"{self!r}: one-hot states of shape {onehot.shape} do not end in "
                             f"(*event_shape, q) = {self.event_shape + (self.num_states,)}.")
        flat = jnp.reshape(onehot, onehot.shape[: onehot.ndim - k] + (self.num_nodes, -1))
        return -self._energy_flat_onehot(params, flat)

    def init_states(self, rng_key, num_chains: int | None = None, dtype=jnp.float32):
        """Uniform random states ``(num_chains, *event_shape)`` (or ``event_shape``)."""
        batch = () if num_chains is None else (check_int("num_chains", num_chains, 1),)
        return jax.random.randint(rng_key, batch + self.event_shape, 0,
                                  self.num_states).astype(dtype)

    def model(self, data=None, *, subsample_size: int | None = None):
        """SVI model: ``numpyro.param`` sites ``f"{name}_J"`` (scalar) and ``f"{name}_h"``
        (``(q,)``, one field per state) and the observed site under a plate over ``data``."""
        params = {"J": numpyro.param(f"{self.name}_J", jnp.zeros(())),
                  "h": numpyro.param(f"{self.name}_h", jnp.zeros((self.num_states,)))}
        self._svi_model(data, subsample_size, params)

    def annealing_path(self, params) -> AnnealingPath:
        r""":math:`f_b = -bE`, base uniform states (:math:`\log Z_0 = N\log q`), ``kernel(b)``
        one colour-class Gibbs sweep at :math:`b`; positions ``(..., *event_shape)``."""
        params = self.check_params(params)

        def logdensity_fn(beta, x):
            return -beta * self.energy(params, x)

        return self._sweep_path(params, logdensity_fn, self._class_update(params),
                                lambda key, n: self.init_states(key, n),
                                self.num_nodes * math.log(self.num_states))

    def _class_update(self, params):
        h = self._field(params)
        w = jnp.asarray(self.adjacency)

        def update_class(key, x, mask, beta):
            onehot = jax.nn.one_hot(x.astype(jnp.int32), self.num_states)
            logits = beta * (params["J"] * jnp.einsum("ij,...jk->...ik", w, onehot) + h)
            new = jax.random.categorical(key, logits, axis=-1)
            return jnp.where(mask, new.astype(x.dtype), x)

        return update_class

    def log_partition(self, params):
        """Exact :math:`\\log Z` by enumeration (at most 2^22 configurations)."""
        return self._log_partition(params, tuple(range(self.num_states)))
