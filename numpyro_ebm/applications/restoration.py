r"""Binary image restoration with an Ising prior.

A clean binary image :math:`y \in \{-1, +1\}^{H \times W}` has an Ising prior
:math:`\log p(y) = -E_\theta(y) + \text{const}` (an :class:`~numpyro_ebm.models.Ising` and its
``params``); each observed pixel flips independently with probability :math:`p`. The posterior is
again an Ising model, with the noisy image as an extra field:

.. math::

    \log p(y \mid x) = J \sum_{\langle ij\rangle} y_i y_j + \sum_i (h_i + \eta x_i) y_i
    + \text{const},\qquad \eta = \tfrac12 \log\frac{1-p}{p}.

Three restorations: the posterior mean by colour-block Gibbs (:func:`restore_gibbs`), iterated
conditional modes (:func:`restore_icm`) and naive mean field (:func:`restore_mean_field`).

**Example**

.. code-block:: python

    clean = numpyro_ebm.datasets.binary_test_image(64)
    noisy = flip_noise(jax.random.key(0), clean, 0.15)
    ising = Ising((64, 64), periodic=False)
    params = ising.init_params(beta=1.0)
    restored, mean = restore_gibbs(jax.random.key(1), noisy, ising, params, 0.15)
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from numpyro_ebm._validation import check_int, is_concrete

__all__ = [
    "flip_noise",
    "flip_noise_strength",
    "posterior",
    "restoration_model",
    "restore_gibbs",
    "restore_icm",
    "restore_mean_field",
]


def flip_noise_strength(flip_prob):
    r""":math:`\eta = \tfrac12 \log\frac{1-p}{p}`: with pixels flipped independently with
    probability :math:`p`, :math:`\log p(x \mid y) = \eta \sum_i x_i y_i + \text{const}`."""
    if is_concrete(flip_prob) and not 0.0 < float(flip_prob) < 0.5:
        raise ValueError(f"`flip_prob` must be in (0, 0.5), got {flip_prob!r}.")
    return 0.5 * jnp.log((1.0 - flip_prob) / flip_prob)


def flip_noise(rng_key, image, flip_prob: float):
    """Flip each spin of ``image`` independently with probability ``flip_prob``."""
    flips = jax.random.bernoulli(rng_key, flip_prob, jnp.shape(image))
    return jnp.where(flips, -image, image)


def restoration_model(noisy, ising, params, flip_prob: float):
    r"""NumPyro model for Ising image restoration: hidden clean spins ``"y"`` with the prior
    ``ising.distribution(params)``, observed noisy pixels ``"x"`` (Bernoulli, 1 = +1 spin), each
    equal to :math:`y_i` with probability :math:`1 - p`. Its posterior is :func:`posterior`.

    :param noisy: observed spins ``x``, shape ``ising.shape``, values in {-1, +1}.
    :param ising: an :class:`~numpyro_ebm.models.Ising` over the image lattice.
    :param params: the prior's parameters ``{"J", "h"}``.
    :param float flip_prob: the noise's flip probability :math:`p`.
    """
    y = numpyro.sample("y", ising.distribution(params))
    probs_same = jnp.where(y > 0, 1.0 - flip_prob, flip_prob)  # P(x_i = +1 | y_i)
    numpyro.sample(
        "x",
        dist.Bernoulli(probs=probs_same).to_event(ising.ndim),
        obs=(jnp.asarray(noisy) > 0).astype(jnp.float32),
    )
    return y


def posterior(noisy, ising, params, flip_prob: float) -> dict:
    r"""The parameters of the posterior of :func:`restoration_model`, for the same ``ising``:
    ``{"J": J, "h": h + eta * x}`` (:math:`\eta` = :func:`flip_noise_strength`)."""
    params = ising.check_params(params)
    noisy = ising.check_spins(noisy).astype(jnp.float32)
    return {"J": params["J"], "h": params["h"] + flip_noise_strength(flip_prob) * noisy}


def restore_gibbs(rng_key, noisy, ising, params, flip_prob: float, num_steps: int = 200,
                  num_burn: int = 50, num_chains: int = 8):
    r"""Posterior-mean restoration by colour-block Gibbs sampling (``ising.kernel``) on
    :func:`posterior`: ``num_chains`` chains started at the noisy image run ``num_burn +
    num_steps`` sweeps; the spins are averaged over the last ``num_steps`` and all chains.

    :return: ``(restored, mean)``: ``sign`` of the posterior mean (the maximizer of the posterior
        marginals: minimum expected pixel error) and the posterior mean :math:`E[y_i \mid x]`,
        both of ``ising.shape``.
    """
    num_steps = check_int("num_steps", num_steps, 1)
    num_burn = check_int("num_burn", num_burn, 0)
    num_chains = check_int("num_chains", num_chains, 1)
    post = posterior(noisy, ising, params, flip_prob)
    mean = _posterior_mean(ising, post, rng_key, jnp.asarray(noisy, jnp.float32), num_steps,
                           num_burn, num_chains)
    return jnp.where(mean >= 0, 1.0, -1.0), mean


@partial(jax.jit, static_argnames=("num_steps", "num_burn", "num_chains"))
def _posterior_mean(ising, post, rng_key, noisy, num_steps, num_burn, num_chains):
    kernel = ising.kernel(post)  # its step takes the batch of chains directly
    state = kernel.init(jnp.broadcast_to(noisy, (num_chains,) + noisy.shape))
    key_burn, key_run = jax.random.split(rng_key)
    state = jax.lax.scan(lambda st, k: (kernel.step(k, st)[0], None), state,
                         jax.random.split(key_burn, num_burn))[0]

    def body(carry, key):
        state, total = carry
        state = kernel.step(key, state)[0]
        return (state, total + state.position.mean(0)), None

    (_, total), _ = jax.lax.scan(
        body, (state, jnp.zeros_like(noisy)), jax.random.split(key_run, num_steps)
    )
    return total / num_steps


def restore_icm(noisy, ising, params, flip_prob: float, max_iters: int = 50):
    r"""Iterated conditional modes (Besag 1986): set each spin to its conditional mode
    :math:`y_i = \operatorname{sign}(m_i)` of the posterior, colour class by colour class (a
    coordinate descent on the posterior energy), from :math:`y = x` until no spin changes or
    ``max_iters`` sweeps.

    :return: ``(restored, num_iters)``, a local minimum of the posterior energy and the number of
        sweeps run.
    """
    max_iters = check_int("max_iters", max_iters, 1)
    post = posterior(noisy, ising, params, flip_prob)
    return _icm(ising, post, jnp.asarray(noisy, jnp.float32), max_iters)


@partial(jax.jit, static_argnames=("max_iters",))
def _icm(ising, post, y, max_iters):
    masks = [jnp.asarray(m) for m in ising.colour_masks]

    def body(carry):
        y0, _, n = carry
        y = y0
        for mask in masks:
            m = ising.local_field(post, y)
            mode = jnp.where(m > 0, 1.0, jnp.where(m < 0, -1.0, y))  # ties keep the current spin
            y = jnp.where(mask, mode, y)
        return y, jnp.any(y != y0), n + 1

    y, _, n = jax.lax.while_loop(
        lambda c: c[1] & (c[2] < max_iters), body, (y, jnp.asarray(True), jnp.asarray(0))
    )
    return y, n


def restore_mean_field(noisy, ising, params, flip_prob: float, num_iters: int = 100,
                       damping: float = 0.5):
    r"""Naive mean-field restoration: iterate :math:`\mu_i \leftarrow \tanh(J \sum_{j\sim i}
    \mu_j + h_i + \eta x_i)` (the posterior's local field at :math:`\mu`), from
    :math:`\mu = x`, with damping :math:`\mu \leftarrow d\,\mu + (1-d)\,\mu_{\text{new}}`.

    :return: ``(restored, mu)``: ``sign(mu)`` and the mean-field magnetizations :math:`\mu_i`.
    """
    num_iters = check_int("num_iters", num_iters, 1)
    if not 0.0 <= float(damping) < 1.0:
        raise ValueError(f"`damping` must be in [0, 1), got {damping!r}.")
    post = posterior(noisy, ising, params, flip_prob)
    mu = _mean_field(ising, post, jnp.asarray(noisy, jnp.float32), num_iters, damping)
    return jnp.where(mu >= 0, 1.0, -1.0), mu


@partial(jax.jit, static_argnames=("num_iters",))
def _mean_field(ising, post, mu, num_iters, damping):
    def body(mu, _):
        new = jnp.tanh(ising.local_field(post, mu))
        return damping * mu + (1.0 - damping) * new, None

    mu, _ = jax.lax.scan(body, mu, None, length=num_iters)
    return mu
