r"""Linear-chain conditional random field: a conditional EBM over tag sequences with exact log Z.

.. math::

    E(y \mid x) = -\sum_{t=1}^{T} U_t(y_t) - \sum_{t=2}^{T} A_{y_{t-1} y_t} - s_{y_1},\qquad
    p(y \mid x) = \exp(-E(y \mid x)) / Z(x)

with unary scores ``U = unary(x)`` of shape ``(T, K)`` (e.g. a network of the inputs), transition
scores ``A`` ``(K, K)`` and start scores ``s`` ``(K,)``. ``log Z`` is the forward algorithm
(``lax.scan`` with ``logsumexp``), decoding is Viterbi (``lax.scan`` + backtrack), and the tag
marginals are ``∂ log Z / ∂ U`` (forward-backward by automatic differentiation).

A hidden Markov model is the special case ``U_t(k) = log p(x_t | k)``, ``A = log`` transition
matrix, ``s = log`` initial distribution: the same code computes its Bayes-optimal decoding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution

__all__ = ["LinearChainCRF", "crf_log_partition", "crf_energy", "viterbi", "crf_marginals"]


def crf_energy(tags, unary, transitions, start=None):
    """``E(y | x)`` for integer ``tags`` ``(..., T)``, ``unary`` ``(..., T, K)``: shape ``(...)``."""
    tags = jnp.asarray(tags)
    batch = jnp.broadcast_shapes(tags.shape[:-1], unary.shape[:-2])
    tags = jnp.broadcast_to(tags, batch + tags.shape[-1:])
    unary = jnp.broadcast_to(unary, batch + unary.shape[-2:])
    score = jnp.take_along_axis(unary, tags[..., None], axis=-1)[..., 0].sum(-1)
    score = score + transitions[tags[..., :-1], tags[..., 1:]].sum(-1)
    if start is not None:
        score = score + start[tags[..., 0]]
    return -score


def _log_partition_single(unary, transitions, start):
    alpha0 = unary[0] + (0.0 if start is None else start)

    def step(alpha, u):
        alpha = logsumexp(alpha[:, None] + transitions, axis=0) + u
        return alpha, None

    alpha, _ = jax.lax.scan(step, alpha0, unary[1:])
    return logsumexp(alpha)


def crf_log_partition(unary, transitions, start=None):
    """``log Z(x)`` by the forward algorithm; ``unary`` ``(..., T, K)`` -> ``(...)``."""
    fn = lambda u: _log_partition_single(u, transitions, start)
    for _ in range(unary.ndim - 2):
        fn = jax.vmap(fn)
    return fn(unary)


def crf_marginals(unary, transitions, start=None):
    """Tag marginals ``p(y_t = k | x)`` ``(..., T, K)`` as ``∂ log Z / ∂ unary``."""
    return jax.grad(lambda u: crf_log_partition(u, transitions, start).sum())(unary)


def _viterbi_single(unary, transitions, start):
    delta0 = unary[0] + (0.0 if start is None else start)

    def forward(delta, u):
        scores = delta[:, None] + transitions  # (from, to)
        return scores.max(0) + u, scores.argmax(0)

    delta, backpointers = jax.lax.scan(forward, delta0, unary[1:])
    last = jnp.argmax(delta)

    def backward(tag, bp):
        prev = bp[tag]
        return prev, tag

    first, tags = jax.lax.scan(backward, last, backpointers, reverse=True)
    return jnp.concatenate([first[None], tags])


def viterbi(unary, transitions, start=None):
    """Minimum-energy tag sequence ``argmin_y E(y | x)``: ``unary`` ``(..., T, K)`` -> ``(..., T)``."""
    fn = lambda u: _viterbi_single(u, transitions, start)
    for _ in range(unary.ndim - 2):
        fn = jax.vmap(fn)
    return fn(unary)


class LinearChainCRF(Distribution):
    """The CRF as a normalized NumPyro distribution over tag sequences ``(T,)``.

    ``log_prob(y) = -E(y | x) - log Z(x)`` exactly, so ``numpyro.sample("y", LinearChainCRF(...),
    obs=tags)`` trains by exact maximum likelihood with ``SVI(model, no_guide, optim,
    Trace_ELBO())``.

    :param unary: ``(*batch, T, K)`` unary scores.
    :param transitions: ``(K, K)`` transition scores ``A[from, to]``.
    :param start: optional ``(K,)`` start scores.
    """

    arg_constraints = {"unary": constraints.real, "transitions": constraints.real}
    pytree_data_fields = ("unary", "transitions", "start")

    def __init__(self, unary, transitions, start=None, *, validate_args=None):
        unary = jnp.asarray(unary)
        if unary.ndim < 2:
            raise ValueError(f"`unary` must have shape (*batch, T, K), got {unary.shape}.")
        num_tags = unary.shape[-1]
        if jnp.shape(transitions) != (num_tags, num_tags):
            raise ValueError(
                f"`transitions` must have shape ({num_tags}, {num_tags}), got "
                f"{jnp.shape(transitions)}."
            )
        if start is not None and jnp.shape(start) != (num_tags,):
            raise ValueError(f"`start` must have shape ({num_tags},), got {jnp.shape(start)}.")
        self.unary, self.transitions, self.start = unary, jnp.asarray(transitions), start
        self._num_tags = num_tags
        super().__init__(unary.shape[:-2], unary.shape[-2:-1], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self._num_tags - 1), 1)

    def energy(self, value):
        return crf_energy(value, self.unary, self.transitions, self.start)

    def log_partition(self):
        return crf_log_partition(self.unary, self.transitions, self.start)

    def log_prob(self, value):
        return -self.energy(value) - self.log_partition()

    def marginals(self):
        return crf_marginals(self.unary, self.transitions, self.start)

    def viterbi(self):
        return viterbi(self.unary, self.transitions, self.start)

    @property
    def mode(self):
        return self.viterbi()

    def sample(self, key, sample_shape=()):
        """Exact sampling by forward filtering, backward sampling."""
        shape = tuple(sample_shape) + self.batch_shape
        unary = jnp.broadcast_to(self.unary, shape + self.unary.shape[-2:])
        keys = jax.random.split(key, math.prod(shape))
        flat = unary.reshape((-1,) + unary.shape[-2:])
        out = jax.vmap(lambda k, u: _ffbs(k, u, self.transitions, self.start))(keys, flat)
        return out.reshape(shape + self.event_shape)


def _ffbs(key, unary, transitions, start):
    alpha0 = unary[0] + (0.0 if start is None else start)

    def forward(alpha, u):
        new = logsumexp(alpha[:, None] + transitions, axis=0) + u
        return new, alpha

    alpha_last, alphas = jax.lax.scan(forward, alpha0, unary[1:])  # alphas: alpha_0..alpha_{T-2}
    keys = jax.random.split(key, unary.shape[0])
    last = jax.random.categorical(keys[-1], alpha_last)

    def backward(tag, inputs):
        alpha, k = inputs
        prev = jax.random.categorical(k, alpha + transitions[:, tag])
        return prev, tag

    first, tags = jax.lax.scan(backward, last, (alphas, keys[:-1]), reverse=True)
    return jnp.concatenate([first[None], tags])
