r"""Likelihoods of energy-based models: test log-likelihood with a log partition function, and the
pseudo-likelihood, which needs none.

* :func:`heldout_log_likelihood`: the mean log-likelihood of held-out data under a trained EBM site,
  :math:`\frac1N\sum_n \big(-E_\theta(x_n)\big) - \log Z(\theta)`, with :math:`\log Z` given as a
  number, as an AIS result (its standard error is carried along), or computed here by grid
  quadrature (1-D/2-D) or enumeration (small discrete models).
* :func:`pseudo_log_likelihood`: Besag's (1975) pseudo-likelihood of discrete configurations,
  :math:`\sum_i \log p_\theta(x_i \mid x_{-i})`, computed from single-site energy differences;
  :math:`Z(\theta)` cancels in every conditional. Use it as a likelihood term
  (``numpyro.factor``) when the parameters of an EBM get a prior and :math:`\log Z(\theta)` is
  intractable (see the guide *EBMs in Bayesian models*).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from numpyro_ebm._validation import check_finite, check_in_set, check_int, is_concrete
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import energy_fn as _energy_fn
from numpyro_ebm.energy import trace_model, unwrap_distribution
from numpyro_ebm.evaluation.partition import logz_exact, logz_quadrature
from numpyro_ebm.sampling.discrete import check_values

__all__ = ["LogLikelihood", "heldout_log_likelihood", "pseudo_log_likelihood"]


# ----------------------------------------------------------------------------- pseudo-likelihood


def pseudo_log_likelihood(
    energy_fn: Callable,
    x,
    values: Sequence[float] = (-1, 1),
    *,
    event_ndim: int | None = None,
    chunk_size: int | None = 64,
):
    r"""Pseudo-log-likelihood of discrete configurations under an energy (Besag 1975).

    .. math::

        \operatorname{PL}_\theta(x) = \sum_{i=1}^{D} \log p_\theta(x_i \mid x_{-i}),\qquad
        \log p_\theta(x_i \mid x_{-i}) = -E_\theta(x)
            - \log \sum_{v \in \mathcal V} e^{-E_\theta(x^{(i \leftarrow v)})},

    where :math:`x^{(i \leftarrow v)}` is :math:`x` with unit :math:`i` set to :math:`v`. The
    partition function cancels in each conditional, so the pseudo-likelihood is exact and cheap:
    :math:`D\,|\mathcal V|` energy evaluations per configuration, for *any* energy over units
    taking values in :math:`\mathcal V` (Ising/Potts models, RBM free energies, neural energies).
    Maximizing it is consistent (the maximizer converges to the true parameters as the number of
    configurations grows, for a well-specified model); as a likelihood inside a posterior it
    gives a posterior centred in the right place whose width is *not* calibrated in general
    (the curvature of the pseudo-likelihood is not the Fisher information).

    :param energy_fn: ``E``, mapping configurations ``(..., *event_shape) -> (...)`` (an output of
        shape ``(..., 1)`` is accepted). It may close over traced parameters (inside a NumPyro
        model, ``jit`` or ``grad``), e.g. ``lambda s: Ising((4, 4)).energy({"J": J, "h": 0.0}, s)``.
    :param x: configurations, shape ``(*batch, *event_shape)``, entries from ``values``.
    :param values: the states of one unit, e.g. ``(-1, 1)`` (spins), ``(0, 1)`` (binary),
        ``(0, 1, 2)`` (a 3-state Potts unit); at least two distinct finite numbers.
    :param int event_ndim: number of trailing axes of ``x`` that form one configuration; default
        ``x.ndim - 1`` (``x`` is a batch ``(N, *event_shape)``).
    :param int chunk_size: units processed at once (``lax.map`` in chunks of ``chunk_size``),
        which bounds the memory to ``chunk_size * |values| * x.size`` numbers; ``None`` for all.
    :return: ``(*batch,)`` pseudo-log-likelihoods, one per configuration (sum them for a data
        set). Differentiable in whatever ``energy_fn`` closes over.

    **Example** (a Bayesian Ising coupling from spin data, no partition function):

    .. code-block:: python

        def model(spins):                                   # spins: (N, 4, 4) in {-1, +1}
            J = numpyro.sample("J", dist.Normal(0.0, 1.0))
            energy = lambda s: Ising((4, 4)).energy({"J": J, "h": 0.0}, s)
            numpyro.factor("pl", pseudo_log_likelihood(energy, spins, (-1, 1)).sum())
    """
    if not callable(energy_fn):
        raise TypeError(f"pseudo_log_likelihood: `energy_fn` must be callable; got {energy_fn!r}.")
    vals = check_values("pseudo_log_likelihood", values).astype(np.float64)
    x = jnp.asarray(x)
    if event_ndim is None:
        if x.ndim < 2:
            raise ValueError(
                "pseudo_log_likelihood: `x` must be a batch of configurations of shape "
                f"(N, *event_shape); got shape {x.shape}. Pass `event_ndim` for other layouts "
                "(e.g. event_ndim=1 and x of shape (D,) for a single configuration)."
            )
        event_ndim = x.ndim - 1
    event_ndim = check_int("event_ndim", event_ndim, minimum=1)
    if event_ndim > x.ndim:
        raise ValueError(
            f"pseudo_log_likelihood: `event_ndim`={event_ndim} exceeds x.ndim={x.ndim}."
        )
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    check_finite("x", x)
    check_in_set("x", x, vals, "pseudo_log_likelihood")
    batch_shape = x.shape[: x.ndim - event_ndim]
    event_shape = x.shape[x.ndim - event_ndim :]
    num_units = math.prod(event_shape)
    dtype = jnp.result_type(float, x.dtype)
    x = x.astype(dtype)
    flat = x.reshape(batch_shape + (num_units,))
    states = jnp.asarray(vals, dtype)

    def energy(xf):  # (..., D) -> (...), any leading axes
        e = jnp.asarray(energy_fn(xf.reshape(xf.shape[:-1] + event_shape)))
        lead = xf.shape[:-1]
        if e.shape != lead:
            if e.size != math.prod(lead):
                raise ValueError(
                    f"pseudo_log_likelihood: `energy_fn` returned shape {e.shape} for "
                    f"configurations of shape {xf.shape[:-1] + event_shape}; expected {lead}."
                )
            e = e.reshape(lead)
        return e

    energy_x = energy(flat)  # (*batch,)

    def log_normalizer(i):
        # -log sum_v exp(-E(x with unit i set to v)), for every configuration of the batch.
        onehot = jnp.arange(num_units) == i  # (D,)
        flips = jnp.where(onehot, states[:, None], 0.0)  # (V, D)
        moved = jnp.where(onehot, 0.0, flat)[None] + flips.reshape(
            (len(vals),) + (1,) * len(batch_shape) + (num_units,)
        )  # (V, *batch, D)
        return logsumexp(-energy(moved), axis=0)  # (*batch,)

    units = jnp.arange(num_units)
    if chunk_size is None or chunk_size >= num_units:
        normalizers = jax.vmap(log_normalizer)(units)
    else:
        normalizers = jax.lax.map(log_normalizer, units, batch_size=chunk_size)
    # sum_i [-E(x) - log sum_v exp(-E(x^{i<-v}))]
    return -num_units * energy_x - jnp.sum(normalizers, axis=0)


# ----------------------------------------------------------------------------- log-likelihood


class LogLikelihood(NamedTuple):
    r"""What :func:`heldout_log_likelihood` returns (nats; divide by the event size for nats per
    dimension).

    :ivar mean: :math:`\frac1N\sum_n -E_\theta(x_n) - \widehat{\log Z}`, the mean log-likelihood.
    :ivar stderr: the standard error of ``mean`` due to :math:`\widehat{\log Z}` (the AIS error
        bar; ``0`` for an exact number, quadrature or enumeration).
    :ivar stderr_data: the standard error of the average over the ``N`` examples,
        :math:`\operatorname{sd}_n(E_\theta(x_n))/\sqrt N` (sampling error of the test set).
    :ivar log_Z: the :math:`\log Z` used.
    :ivar per_example: ``(N,)`` log-likelihoods :math:`-E_\theta(x_n) - \widehat{\log Z}`.
    """

    mean: jax.Array
    stderr: jax.Array
    stderr_data: jax.Array
    log_Z: jax.Array
    per_example: jax.Array


def _find_site(model, model_args, model_kwargs) -> tuple[str, Any]:
    """The unique ``Unnormalized`` sample site of ``model`` (observed or not)."""
    tr = trace_model(model, None, model_args, model_kwargs)
    found = [
        (name, unwrap_distribution(site["fn"]))
        for name, site in tr.items()
        if site["type"] == "sample" and isinstance(unwrap_distribution(site["fn"]), Unnormalized)
    ]
    if len(found) != 1:
        sample_sites = [k for k, v in tr.items() if v["type"] == "sample"]
        raise ValueError(
            "heldout_log_likelihood: `site=None` needs exactly one numpyro_ebm.Unnormalized site "
            f"in the model; found {[name for name, _ in found]} among the sample sites "
            f"{sample_sites}. Pass `site` by name."
        )
    return found[0]


_LOGZ_HINT = (
    "`logz` must be a number (log Z), a result with `log_Z` and `stderr` (e.g. "
    "numpyro_ebm.logz_ais(...)), 'quadrature' (with `low` and `high`; 1-D or 2-D events) or "
    "'exact' (with `values`; small discrete events)"
)


def heldout_log_likelihood(
    model,
    params,
    data,
    site: str | None = None,
    logz: Any = "quadrature",
    *,
    model_args=(),
    model_kwargs=None,
    low=None,
    high=None,
    num_points: int = 512,
    values: Sequence[float] | None = None,
) -> LogLikelihood:
    r"""Mean log-likelihood of held-out data under a trained EBM site.

    (Not ``numpyro.infer.util.log_likelihood``, which returns the per-draw log-likelihoods of the
    observed sites of a model for posterior samples; this one reports a test-set log-likelihood
    with its log partition function and error bars.)

    .. math::

        \overline{\log p_\theta} = \frac1N \sum_{n=1}^N \big(-E_\theta(x_n)\big) - \log Z(\theta),
        \qquad E_\theta = \texttt{energy\_fn(model, site)(params, \cdot)} .

    The energy is the site's own (:func:`numpyro_ebm.energy_fn`): for a site with a learned
    ``log_Z`` (NCE, FCE) it *includes* that ``log_Z``, so ``logz=0.0`` gives the self-normalized
    log-likelihood and ``logz="quadrature"`` the exact one. Any :math:`\log Z` passed in must be
    that of the same energy, e.g. ``logz_ais(key, lambda x: E(params, x), base, kernel)`` with
    ``E = energy_fn(model, site)``.

    :param model: the NumPyro model holding the EBM site (as trained with SVI).
    :param dict params: its parameters (``svi.get_params(state)``): every ``numpyro.param`` site of
        the model, or ``{}`` / ``None`` for their initial values; unknown (e.g. misspelt) or
        missing keys raise (:func:`numpyro_ebm.energy.check_params`).
    :param data: held-out examples, shape ``(N, *event_shape)``.
    :param str site: the site name; ``None`` finds the model's only ``Unnormalized`` site.
    :param logz: how to get :math:`\log Z(\theta)`:

        * a number (or a scalar array): used as is (``stderr = 0``);
        * an object with ``log_Z`` and ``stderr`` attributes, such as the
          :class:`~numpyro_ebm.evaluation.ais.AISResult` of :func:`numpyro_ebm.logz_ais`: its
          ``stderr`` is returned as the error bar of the mean;
        * ``"quadrature"`` (default): :func:`numpyro_ebm.logz_quadrature` on the box
          ``[low, high]`` with ``num_points`` per dimension (events of size 1 or 2);
        * ``"exact"``: :func:`numpyro_ebm.logz_exact` over ``values ** event_size``
          configurations (small discrete events).
    :param model_args: positional arguments of ``model`` used to trace it (e.g. the training data).
    :param model_kwargs: keyword arguments of ``model``.
    :param low: lower bound(s) of the quadrature box (``logz="quadrature"``).
    :param high: upper bound(s) of the quadrature box.
    :param int num_points: quadrature points per dimension.
    :param values: the states of one unit (``logz="exact"``), e.g. ``(0, 1)`` or ``(-1, 1)``.
    :return: :class:`LogLikelihood` ``(mean, stderr, stderr_data, log_Z, per_example)``.

    **Example**

    .. code-block:: python

        params = svi.get_params(svi_state)
        ll = numpyro_ebm.heldout_log_likelihood(model, params, x_test, "x", logz="quadrature",
                                        low=-4.0, high=4.0, model_args=(x_train,))
        E = numpyro_ebm.energy_fn(model, "x", model_args=(x_train,))
        ais = numpyro_ebm.logz_ais(key, lambda x: E(params, x), base, kernel)
        ll = numpyro_ebm.heldout_log_likelihood(model, params, x_test, "x", logz=ais,
                                        model_args=(x_train,))
        print(f"{ll.mean:.3f} +- {ll.stderr:.3f} nats")
    """
    if not callable(model):
        raise TypeError(f"heldout_log_likelihood: `model` must be a NumPyro model; got {model!r}.")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise TypeError(
            "heldout_log_likelihood: `params` must be a dict of parameter values "
            f"(svi.get_params(state)); got {type(params).__name__}."
        )
    if site is None:
        site, site_dist = _find_site(model, model_args, model_kwargs)
    else:
        tr = trace_model(model, None, model_args, model_kwargs)
        site_dist = unwrap_distribution(tr[site]["fn"]) if site in tr else None
    E = _energy_fn(model, site, model_args, model_kwargs)  # raises on an unknown site name
    event_shape = tuple(site_dist.event_shape)
    data = jnp.asarray(data)
    event_ndim = len(event_shape)
    if data.ndim != event_ndim + 1 or data.shape[1:] != event_shape:
        raise ValueError(
            f"heldout_log_likelihood: `data` must have shape (N, *event_shape) = (N, "
            f"{', '.join(map(str, event_shape))}) for site {site!r}; got {data.shape}."
        )
    if data.shape[0] < 1:
        raise ValueError("heldout_log_likelihood: `data` is empty; expected at least one example.")
    check_finite("data", data)

    def energy(x):
        return E(params, x)

    # first, so that parameters that do not match the model raise before any quadrature or AIS
    energies = jnp.asarray(energy(data)).reshape(data.shape[0])
    event_size = math.prod(event_shape)
    stderr = jnp.asarray(0.0)
    if isinstance(logz, str):
        if logz == "quadrature":
            if low is None or high is None:
                raise ValueError(
                    "heldout_log_likelihood: logz='quadrature' needs the box bounds `low` and "
                    "`high`."
                )
            if event_size > 2:
                raise ValueError(
                    "heldout_log_likelihood: logz='quadrature' handles events of size 1 or 2; "
                    f"site {site!r} has event shape {event_shape}. Use "
                    "logz=numpyro_ebm.logz_ais(...)."
                )

            def flat_energy(points):  # (n, event_size) -> (n,)
                return energy(points.reshape((points.shape[0],) + event_shape))

            log_Z = logz_quadrature(flat_energy, low, high, num_points, dim=event_size)
        elif logz == "exact":
            if values is None:
                raise ValueError(
                    "heldout_log_likelihood: logz='exact' needs `values`, the states of one unit, "
                    "e.g. (0, 1) or (-1, 1)."
                )
            log_Z = logz_exact(
                lambda s: energy(s.reshape((s.shape[0],) + event_shape)), event_size, values
            )
        else:
            raise ValueError(f"heldout_log_likelihood: {_LOGZ_HINT}; got {logz!r}.")
    elif hasattr(logz, "log_Z") and hasattr(logz, "stderr"):
        log_Z, stderr = jnp.asarray(logz.log_Z), jnp.asarray(logz.stderr)
    else:
        try:
            log_Z = jnp.asarray(logz, dtype=jnp.result_type(float))
        except (TypeError, ValueError) as err:
            raise TypeError(f"heldout_log_likelihood: {_LOGZ_HINT}; got {logz!r}.") from err
        if log_Z.ndim != 0:
            raise ValueError(
                "heldout_log_likelihood: a numeric `logz` must be a scalar; got shape "
                f"{log_Z.shape}."
            )
    if is_concrete(log_Z) and not np.isfinite(np.asarray(log_Z)):
        raise ValueError(
            f"heldout_log_likelihood: `logz` gave log Z = {float(log_Z)}; expected a finite number "
            "(a NaN or infinite log Z would make every log-likelihood meaningless)."
        )
    per_example = -energies - log_Z
    n = data.shape[0]
    stderr_data = (
        jnp.std(energies, ddof=1) / math.sqrt(n) if n > 1 else jnp.asarray(jnp.nan, energies.dtype)
    )
    return LogLikelihood(jnp.mean(per_example), stderr, stderr_data, log_Z, per_example)
