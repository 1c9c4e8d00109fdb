r"""Energy networks: a default multilayer perceptron energy for low-dimensional data.

.. math::

    E_\theta(x) = w_L^\top \phi(W_{L-1} \cdots \phi(W_1 x + b_1) \cdots) + b_L,
    \qquad (\ldots, D) \to (\ldots)

A Flax ``linen`` module: register it in a model with
``numpyro.contrib.module.flax_module("energy", MLPEnergy(), input_shape=(1, D))`` and use the
returned callable as an :class:`~numpyro_ebm.Unnormalized` energy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn

__all__ = ["MLPEnergy"]


class MLPEnergy(nn.Module):
    """A scalar energy: dense layers of widths ``hidden`` with ``activation``, then one output.

    :ivar hidden: hidden layer widths (default ``(64, 64)``).
    :ivar activation: the nonlinearity (default ``flax.linen.swish``, smooth, so score matching
        can differentiate the energy twice).

    **Example**

    .. code-block:: python

        def model(data):
            net = flax_module("energy", numpyro_ebm.nets.MLPEnergy(), input_shape=(1, 2))
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", numpyro_ebm.Unnormalized(net, (2,)), obs=batch)
    """

    hidden: Sequence[int] = (64, 64)
    activation: Callable = nn.swish

    @nn.compact
    def __call__(self, x):
        h = x
        for width in self.hidden:
            h = self.activation(nn.Dense(width)(h))
        return nn.Dense(1)(h)[..., 0]
