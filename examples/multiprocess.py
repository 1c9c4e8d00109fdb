"""Chains over several processes with JAX's multi-controller runtime: ``sample_chains`` (ULA with
streamed observables, and an Ising model's exact Gibbs sampler), PCD training and ``logz_ais``
with the chains a global array split over the devices of 2 local CPU processes; the pooled
results must equal a single-process run with the same seed.

``python examples/multiprocess.py`` starts ``--num-processes`` workers (each
``jax.distributed.initialize(coordinator_address="localhost:PORT", num_processes=N,
process_id=i)``, CPU collectives over gloo, ``--devices-per-process`` CPU devices each) and one
single-process reference run, all as subprocesses, then compares what they wrote. It exits with
status 1 when a result differs. The worker (``--worker I``) is the script one runs on a GPU cluster:
there ``jax.distributed.initialize()`` reads the coordinator and the process ids from the cluster
(SLURM, Open MPI, Kubernetes), see docs/scale.md.

Usage: python examples/multiprocess.py [--num-processes 2] [--devices-per-process 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

NUM_CHAINS = 64  # divisible by every device count used here (2 processes x 2 devices, 1 device)


def computations():
    """Everything the example runs, in the process (or processes) that call it: a dict of NumPy
    results, the same in every process."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    import optax
    from numpyro.infer import SVI

    import numpyro_ebm
    from numpyro_ebm.models import Ising
    from numpyro_ebm.sampling.distributed import gather, replicate, shard_chains

    out = {}

    # 1. sample_chains + ULA with streamed observables, no samples kept (memory O(chains))
    def logdensity(x):  # a banana-shaped density
        return -0.5 * (x[0] ** 2 / 4.0 + (x[1] - 0.25 * x[0] ** 2) ** 2)

    x0 = shard_chains(jax.random.normal(jax.random.key(1), (NUM_CHAINS, 2)))
    result = numpyro_ebm.sample_chains(
        jax.random.key(0), logdensity, partial(numpyro_ebm.ula, step_size=0.05), x0, 200,
        num_samples=100, observables=lambda x: {"x": x, "r2": jnp.sum(x**2)}, keep_samples=False,
    )
    pooled = numpyro_ebm.pool_moments(result.observables)
    out["ula_positions"] = gather(result.positions)
    out["ula_mean_x"] = gather(pooled.mean["x"])
    out["ula_var_r2"] = gather(pooled.variance["r2"])
    # the chains stayed split over the devices of every process
    out["ula_num_shards"] = np.asarray(len(result.positions.sharding.device_set))

    # 2. an Ising model's own exact sampler (kernel None): magnetization and energy per site
    ising = Ising((8, 8))
    params = ising.init_params(beta=0.4)
    spins = shard_chains(ising.init_spins(jax.random.key(2), NUM_CHAINS))
    result = numpyro_ebm.sample_chains(
        jax.random.key(3), ising.distribution(params), None, spins, 50, num_samples=25,
        observables=lambda s: {"m": ising.magnetization(s),
                               "e": ising.energy_per_site(params, s)},
        keep_samples=False,
    )
    pooled = numpyro_ebm.pool_moments(result.observables)
    out["ising_m"] = gather(pooled.mean["m"])
    out["ising_e"] = gather(pooled.mean["e"])
    out["ising_spins"] = gather(result.positions)

    # 3. PCD training of a Gaussian energy, the persistent chains split over the devices
    data = np.random.default_rng(0).normal([1.0, -1.0], [0.5, 2.0], (512, 2)).astype(np.float32)

    def model(data):
        mu = numpyro.param("mu", jnp.zeros(2))
        log_s = numpyro.param("log_s", jnp.zeros(2))

        def energy(x):
            return 0.5 * jnp.sum(((x - mu) / jnp.exp(log_s)) ** 2, -1)

        with numpyro.plate("data", data.shape[0], subsample_size=128):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)

    pcd = numpyro_ebm.PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=0.05), num_steps=10, num_chains=NUM_CHAINS,
        reinit_prob=0.0, init_dist=dist.Normal(0.0, 2.0).expand([2]).to_event(1),
    )
    svi = SVI(model, pcd.guide, optax.adam(0.05), loss=pcd)
    state = svi.init(jax.random.key(4), data)
    # everything replicated on every device, except the chains, split over them
    chains = state.mutable_state[numpyro_ebm.estimators.PCD_STATE]
    state = replicate(state._replace(mutable_state=None))._replace(
        mutable_state={numpyro_ebm.estimators.PCD_STATE: shard_chains(chains)})
    data = replicate(data)
    update = jax.jit(svi.update)
    for _ in range(30):
        state, loss = update(state, data)
    params = svi.get_params(state)
    out["pcd_mu"] = gather(params["mu"])
    out["pcd_log_s"] = gather(params["log_s"])
    (out["pcd_chains"],) = jax.tree.leaves(gather(state.mutable_state))
    out["pcd_num_shards"] = np.asarray(len(jax.tree.leaves(state.mutable_state)[0].sharding.device_set))

    # 4. logz_ais of the Ising model along its own annealing path
    ais = numpyro_ebm.logz_ais(jax.random.key(5), ising.distribution(ising.init_params(beta=0.3)),
                               num_chains=NUM_CHAINS, num_temperatures=100)
    out["ais_log_Z"] = gather(ais.log_Z)
    out["ais_log_weights"] = gather(ais.log_weights)
    out["ais_num_shards"] = np.asarray(len(ais.log_weights.sharding.device_set))
    return out


def worker(process_id, num_processes, port, devices_per_process, out_path):
    """One process of the multi-process run (``process_id`` < 0: the single-process reference)."""
    import jax

    jax.config.update("jax_num_cpu_devices", devices_per_process)
    if process_id >= 0:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}", num_processes=num_processes,
            process_id=process_id,
        )
    out = computations()
    out["num_devices"] = np.asarray(jax.device_count())
    if jax.process_index() == 0:
        np.savez(out_path, **out)
    if process_id >= 0:
        jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(num_processes=2, devices_per_process=2, timeout=600, python=sys.executable):
    """Start the workers and the reference as subprocesses; return ``(multi, single)`` results
    (dicts of NumPy arrays). Raises ``RuntimeError`` with the workers' output when one fails."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        multi, single = os.path.join(tmp, "multi.npz"), os.path.join(tmp, "single.npz")
        cmd = [python, os.path.abspath(__file__), "--num-processes", str(num_processes),
               "--devices-per-process", str(devices_per_process), "--port", str(port)]
        procs = [
            subprocess.Popen(cmd + ["--worker", str(i), "--result", multi], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(num_processes)
        ]
        ref = subprocess.run([python, os.path.abspath(__file__), "--devices-per-process", "1",
                              "--worker", "-1", "--result", single], env=env,
                             capture_output=True, text=True, timeout=timeout)
        logs = []
        for p in procs:
            try:
                logs.append(p.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                logs.append(p.communicate()[0])
        if ref.returncode or any(p.returncode for p in procs):
            raise RuntimeError(
                "a worker failed:\n" + "\n----\n".join(logs + [ref.stdout + ref.stderr]))
        with np.load(multi) as a, np.load(single) as b:
            return dict(a), dict(b)


def compare(multi, single, rtol=1e-5, atol=1e-5):
    """``{name: max abs difference}`` and the names that differ beyond the tolerance."""
    skip = {"num_devices", "ula_num_shards", "ais_num_shards", "pcd_num_shards"}
    diffs, bad = {}, []
    for name in sorted(set(single) - skip):
        a, b = np.asarray(multi[name], np.float64), np.asarray(single[name], np.float64)
        diffs[name] = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
            bad.append(name)
    return diffs, bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=2)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.num_processes, args.port, args.devices_per_process, args.result)
        return 0
    t0 = time.perf_counter()
    multi, single = launch(args.num_processes, args.devices_per_process)
    diffs, bad = compare(multi, single)
    print(f"{args.num_processes} processes x {args.devices_per_process} CPU devices "
          f"({int(multi['num_devices'])} devices; chains on {int(multi['ula_num_shards'])} (ULA), "
          f"{int(multi['pcd_num_shards'])} (PCD), {int(multi['ais_num_shards'])} (AIS)) vs "
          f"1 process x 1 device, {time.perf_counter() - t0:.1f} s")
    for name, d in diffs.items():
        print(f"  {name:18s} max |multi - single| = {d:.2e}")
    print(f"ULA pooled mean {multi['ula_mean_x']}, Ising <m> {float(multi['ising_m']):+.4f}, "
          f"PCD mu {multi['pcd_mu']}, AIS log Z {float(multi['ais_log_Z']):.4f}")
    print("identical within tolerance" if not bad else f"DIFFERENT: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
