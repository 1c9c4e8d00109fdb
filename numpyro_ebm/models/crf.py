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

Two forms: :class:`LinearChainCRF` is the normalized NumPyro distribution of ``y`` given the
unary scores; :class:`LinearChainCRFModel` is the model on the library's protocol (parameters
``{"transitions", "start"}``, plus an ``"emission"`` table for symbol inputs), whose
:meth:`~LinearChainCRFModel.model` trains by exact maximum likelihood with ``Trace_ELBO``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution

from numpyro_ebm._validation import check_int
from numpyro_ebm.models.base import EnergyModel

__all__ = [
    "LinearChainCRF",
    "LinearChainCRFModel",
    "crf_log_partition",
    "crf_energy",
    "viterbi",
    "crf_marginals",
]


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


class LinearChainCRFModel(EnergyModel):
    r"""A linear-chain CRF on the model protocol: a conditional EBM :math:`E(y \mid x)` over tag
    sequences ``y`` ``(T,)`` with exact :math:`\log Z(x)` (forward algorithm) and exact sampling.

    Parameters: ``{"transitions": (K, K), "start": (K,)}``, plus ``"emission": (S, K)`` when
    ``num_symbols = S`` is given; the inputs ``x`` of every method are then integer symbols
    ``(..., T)`` and the unary scores are ``U = emission[x]``; otherwise the inputs are the unary
    scores ``(..., T, K)`` themselves (e.g. a network's output).

    :param int num_tags: ``K``.
    :param int num_symbols: ``S``, the size of a symbol vocabulary (optional, see above).
    :param str name: prefix of the ``numpyro.param`` sites (``f"{name}_transitions"``, ...).
    :param str site: name of the observed tag site of :meth:`model` (default ``"tags"``).

    **Example** (exact maximum likelihood through SVI, Viterbi decoding)

    .. code-block:: python

        crf = LinearChainCRFModel(num_tags=4, num_symbols=12)
        svi = SVI(crf.model, no_guide, optax.adam(0.05), Trace_ELBO())
        result = svi.run(jax.random.key(0), 1500, symbols, tags, subsample_size=256)
        params = crf.get_params(result.params)
        crf.viterbi(params, test_symbols)                  # (N, T) decoded tags
    """

    def __init__(self, num_tags: int, num_symbols: int | None = None, *, name: str = "crf",
                 site: str = "tags"):
        self.num_tags = check_int("num_tags", num_tags, 1)
        self.num_symbols = None if num_symbols is None else check_int("num_symbols", num_symbols, 1)
        self.name = name
        self.site = site

    def __repr__(self):
        extra = "" if self.num_symbols is None else f", num_symbols={self.num_symbols}"
        return f"LinearChainCRFModel(num_tags={self.num_tags}{extra})"

    @property
    def param_shapes(self) -> dict:
        K = self.num_tags
        shapes = {"transitions": (K, K), "start": (K,)}
        if self.num_symbols is not None:
            shapes["emission"] = (self.num_symbols, K)
        return shapes

    def init_params(self, rng_key=None, data=None) -> dict:
        """All scores zero (the uniform distribution over tag sequences)."""
        return {k: jnp.zeros(shape) for k, shape in self.param_shapes.items()}

    def unary(self, params, inputs):
        """The unary scores ``(..., T, K)``: ``emission[inputs]`` for symbol inputs, else
        ``inputs``."""
        if self.num_symbols is None:
            unary = jnp.asarray(inputs)
            if unary.ndim < 2 or unary.shape[-1] != self.num_tags:
                raise ValueError(
                    f"{self!r}: `inputs` must be unary scores of shape (..., T, {self.num_tags}), "
                    f"got {unary.shape}."
                )
            return unary
        return params["emission"][jnp.asarray(inputs)]

    def energy(self, params, tags, inputs):
        """:math:`E(y \\mid x)` of ``tags`` ``(..., T)``: shape ``(...)``."""
        return crf_energy(tags, self.unary(params, inputs), params["transitions"], params["start"])

    def logdensity(self, params, tags, inputs):
        """:math:`-E(y \\mid x)`, unnormalized."""
        return -self.energy(params, tags, inputs)

    def log_partition(self, params, inputs):
        """Exact :math:`\\log Z(x)` by the forward algorithm: shape ``(...)``."""
        return crf_log_partition(self.unary(params, inputs), params["transitions"], params["start"])

    def distribution(self, params, inputs) -> LinearChainCRF:
        """The normalized :class:`LinearChainCRF` of the tags given ``inputs``."""
        return LinearChainCRF(self.unary(params, inputs), params["transitions"], params["start"])

    def log_likelihood(self, params, tags, inputs):
        """Exact :math:`\\log p(y \\mid x)` per sequence."""
        return self.distribution(params, inputs).log_prob(tags)

    def viterbi(self, params, inputs):
        """Minimum-energy tags ``(..., T)``."""
        return viterbi(self.unary(params, inputs), params["transitions"], params["start"])

    def marginals(self, params, inputs):
        """Tag marginals ``p(y_t = k | x)`` ``(..., T, K)``."""
        return crf_marginals(self.unary(params, inputs), params["transitions"], params["start"])

    def sample(self, rng_key, params, inputs, num_samples: int = 1):
        """``(num_samples, ..., T)`` exact draws (forward filtering, backward sampling)."""
        num_samples = check_int("num_samples", num_samples, 1)
        return self.distribution(params, inputs).sample(rng_key, (num_samples,))

    def model(self, inputs=None, tags=None, *, subsample_size: int | None = None):
        """A NumPyro model: the parameters as ``numpyro.param`` sites and, under a plate over the
        ``N`` sequences (subsampled to ``subsample_size``), the tags ``(N, T)`` observed at the
        site ``site`` with the normalized :class:`LinearChainCRF` given ``inputs``. Its
        ``Trace_ELBO`` with an empty guide (``no_guide``) is the exact negative log-likelihood."""
        if inputs is None:
            raise ValueError(f"{self!r}.model: `inputs` (symbols or unary scores) are required.")
        params = {k: numpyro.param(f"{self.name}_{k}", v) for k, v in self.init_params().items()}
        event_dim = 1 if self.num_symbols is not None else 2
        n = jnp.shape(inputs)[0]
        with numpyro.plate(f"{self.name}_sequences", n, subsample_size=subsample_size):
            x = numpyro.subsample(inputs, event_dim=event_dim)
            y = None if tags is None else numpyro.subsample(tags, event_dim=1)
            numpyro.sample(self.site, self.distribution(params, x), obs=y)

    def annealing_path(self, params):
        raise NotImplementedError(
            "LinearChainCRFModel needs no MCMC: draw exact samples with `crf.sample(rng_key, "
            "params, inputs)` and compute log Z with `crf.log_partition(params, inputs)`."
        )
