"""A known hidden Markov model for synthetic sequence-labeling tasks (and its Bayes-optimal decoder)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ebm.models.crf import crf_marginals

__all__ = ["HMM", "random_hmm", "sample_hmm", "hmm_bayes_decode"]


class HMM(NamedTuple):
    """``initial`` ``(K,)``, ``transition`` ``(K, K)`` (rows sum to 1), ``emission`` ``(K, V)``."""

    initial: jax.Array
    transition: jax.Array
    emission: jax.Array


def random_hmm(rng_key, num_tags=4, num_symbols=12, stickiness=4.0, concentration=0.3) -> HMM:
    """A random HMM with sticky transitions and peaked, overlapping emissions."""
    k1, k2 = jax.random.split(rng_key)
    trans = jax.random.dirichlet(k1, jnp.ones(num_tags), (num_tags,)) + stickiness * jnp.eye(num_tags)
    trans = trans / trans.sum(-1, keepdims=True)
    emis = jax.random.dirichlet(k2, concentration * jnp.ones(num_symbols), (num_tags,))
    return HMM(jnp.ones(num_tags) / num_tags, trans, emis)


def sample_hmm(rng_key, hmm: HMM, num_sequences: int, length: int):
    """Draw ``(tags, symbols)``, both integer arrays ``(num_sequences, length)``."""

    def one(key):
        k0, k_seq = jax.random.split(key)
        y0 = jax.random.categorical(k0, jnp.log(hmm.initial))

        def step(y, k):
            ka, kb = jax.random.split(k)
            x = jax.random.categorical(ka, jnp.log(hmm.emission[y]))
            y_next = jax.random.categorical(kb, jnp.log(hmm.transition[y]))
            return y_next, (y, x)

        _, (ys, xs) = jax.lax.scan(step, y0, jax.random.split(k_seq, length))
        return ys, xs

    return jax.vmap(one)(jax.random.split(rng_key, num_sequences))


def hmm_bayes_decode(hmm: HMM, symbols):
    """Bayes-optimal per-token decoding: ``argmax_k p(y_t = k | x)`` under the true HMM.

    The HMM is the CRF with ``U_t(k) = log p(x_t | k)``, ``A = log transition``, ``s = log initial``.
    """
    unary = jnp.log(hmm.emission.T)[symbols]  # (N, T, K)
    marg = crf_marginals(unary, jnp.log(hmm.transition), jnp.log(hmm.initial))
    return marg.argmax(-1)
