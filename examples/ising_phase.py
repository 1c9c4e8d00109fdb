"""The 2-D Ising phase transition: |magnetization| and energy per site vs temperature from
checkerboard Gibbs sampling, against the exact infinite-lattice curves (Onsager 1944, Yang 1952).
Above T_c a finite L x L lattice keeps |M| ~ 1/L (the curve is approached as L grows); below T_c
and for the energy the finite-size corrections are small away from T_c.

All temperatures run in one compiled program (``jax.vmap`` over the parameters
``ising.init_params(beta=beta)``). One step of ``ising.kernel(params)`` is one colour-block sweep.
Prints the largest deviation from the exact curves away from the critical region and saves a PNG.

Usage: python examples/ising_phase.py [--sizes 32 64] [--num-steps 700] [--out ising_phase.png]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from numpyro_ebm.models import (  # noqa: E402
    Ising,
    critical_beta,
    onsager_energy_per_site,
    onsager_magnetization,
)


def measure(rng_key, size, betas, num_chains, num_burn, num_steps):
    """Mean |M| and E/site per beta: chains start all up, ``num_burn`` steps, then averages over
    ``num_steps`` steps and all chains."""
    ising = Ising((size, size))

    def one(beta, key):
        algo = ising.kernel(ising.init_params(beta=beta))
        key_burn, key_run = jax.random.split(key)
        state = algo.init(ising.init_spins(key, num_chains, kind="up"))
        state = jax.lax.scan(lambda s, k: (algo.step(k, s)[0], None), state,
                             jax.random.split(key_burn, num_burn))[0]

        def body(carry, k):
            state, m_sum, e_sum = carry
            state, _ = algo.step(k, state)  # the step works on a batch of lattices directly
            m = jnp.abs(ising.magnetization(state.position)).mean()
            e = (-state.logdensity / beta).mean() / ising.num_sites  # physical units, J = 1
            return (state, m_sum + m, e_sum + e), None

        (_, m_sum, e_sum), _ = jax.lax.scan(body, (state, 0.0, 0.0),
                                            jax.random.split(key_run, num_steps))
        return m_sum / num_steps, e_sum / num_steps

    keys = jax.random.split(rng_key, len(betas))
    return jax.jit(jax.vmap(one))(jnp.asarray(betas), keys)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--burn", type=int, default=300)
    parser.add_argument("--num-steps", type=int, default=700)
    parser.add_argument("--out", default="ising_phase.png")
    args = parser.parse_args()

    temperatures = np.linspace(1.5, 3.5, 25)
    betas = 1.0 / temperatures
    t_c = 1.0 / critical_beta
    exact_m, exact_e = onsager_magnetization(betas), onsager_energy_per_site(betas)
    away = np.abs(temperatures - t_c) > 0.35  # outside the critical region (finite-size effects)
    ordered = temperatures < t_c - 0.35  # above T_c a finite lattice has |M| ~ 1/L, not 0

    fig, (ax_m, ax_e) = plt.subplots(1, 2, figsize=(11, 4))
    fine_t = np.linspace(1.5, 3.5, 400)
    ax_m.plot(fine_t, onsager_magnetization(1 / fine_t), "k-", lw=1.5, label="Yang (L = inf)")
    ax_e.plot(fine_t, onsager_energy_per_site(1 / fine_t), "k-", lw=1.5, label="Onsager (L = inf)")
    for i, size in enumerate(args.sizes):
        t0 = time.perf_counter()
        m, e = measure(jax.random.key(i), size, betas, args.chains, args.burn, args.num_steps)
        m, e = np.asarray(jax.block_until_ready(m)), np.asarray(e)
        seconds = time.perf_counter() - t0
        dm, de = np.abs(m - exact_m)[ordered].max(), np.abs(e - exact_e)[away].max()
        print(f"L = {size:3d}: {len(betas)} temperatures x {args.chains} chains x "
              f"{args.burn + args.num_steps} steps in {seconds:.1f} s; max ||M| - exact| for "
              f"T < T_c - 0.35: {dm:.4f}; max |E/N - exact| for |T - T_c| > 0.35: {de:.4f}")
        ax_m.plot(temperatures, m, "o", ms=4, label=f"Gibbs, {size}x{size}")
        ax_e.plot(temperatures, e, "o", ms=4, label=f"Gibbs, {size}x{size}")
    for ax, label in [(ax_m, "|M| per spin"), (ax_e, "energy per site")]:
        ax.axvline(t_c, color="gray", ls=":", lw=1)
        ax.set_xlabel("temperature T = 1 / beta (J = 1)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("2-D Ising model, checkerboard Gibbs vs exact infinite-lattice results")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
