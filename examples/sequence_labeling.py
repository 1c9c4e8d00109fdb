"""Sequence labeling with a linear-chain conditional EBM (CRF) trained by exact likelihood.

Data come from a known hidden Markov model; the CRF energy
E(y | x) = -sum_t U[x_t, y_t] - sum_t A[y_{t-1}, y_t] - s[y_1] has exact log Z (forward algorithm),
is trained with NumPyro's SVI + Trace_ELBO (the guide is empty, so the loss is the negative
log-likelihood), decoded by Viterbi, and compared with the HMM's Bayes-optimal accuracy.

    python examples/sequence_labeling.py
"""

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402

from numpyro_ebm import no_guide  # noqa: E402
from numpyro_ebm.datasets.sequences import hmm_bayes_decode, random_hmm, sample_hmm  # noqa: E402
from numpyro_ebm.models import LinearChainCRFModel  # noqa: E402


def run(seed=0, num_train=2000, num_test=1000, length=30, num_updates=1500, verbose=True):
    key_hmm, key_train, key_test, key_svi = jax.random.split(jax.random.key(seed), 4)
    hmm = random_hmm(key_hmm)
    y_train, x_train = sample_hmm(key_train, hmm, num_train, length)
    y_test, x_test = sample_hmm(key_test, hmm, num_test, length)

    # U[x_t, y_t] (emission), A (transitions), s (start): params {"emission", "transitions", "start"}
    crf = LinearChainCRFModel(num_tags=4, num_symbols=12)
    svi = SVI(crf.model, no_guide, optax.adam(0.05), Trace_ELBO())
    t0 = time.perf_counter()
    result = svi.run(key_svi, num_updates, x_train, y_train,
                     subsample_size=min(256, num_train), progress_bar=verbose)
    seconds = time.perf_counter() - t0
    params = crf.get_params(result.params)
    decoded = crf.viterbi(params, x_test)
    crf_acc = float((decoded == y_test).mean())
    bayes_acc = float((hmm_bayes_decode(hmm, x_test) == y_test).mean())
    majority = float(jnp.max(jnp.bincount(y_test.ravel(), length=4)) / y_test.size)
    if verbose:
        print(f"CRF (Viterbi) test accuracy : {crf_acc:.4f}   (trained in {seconds:.1f} s)")
        print(f"HMM Bayes-optimal accuracy   : {bayes_acc:.4f}")
        print(f"majority-tag baseline        : {majority:.4f}")
    return dict(crf=crf_acc, bayes=bayes_acc, majority=majority, losses=result.losses,
                seconds=seconds, decoded=decoded, y_test=y_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-updates", type=int, default=1500)
    parser.add_argument("--out", default="sequence_labeling.png")
    args = parser.parse_args()
    r = run(seed=args.seed, num_updates=args.num_updates)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    axes[0].plot(r["losses"])
    axes[0].set(title="negative log-likelihood (SVI)", xlabel="step", yscale="log")
    show = jnp.stack([r["y_test"][:8].ravel(), r["decoded"][:8].ravel()])
    axes[1].imshow(show[:, :120], aspect="auto", interpolation="nearest", cmap="tab10")
    axes[1].set(title=f"true (top) vs Viterbi (bottom): acc {r['crf']:.3f} "
                f"(Bayes {r['bayes']:.3f})", yticks=[])
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
