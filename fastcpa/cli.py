"""The ``fastcpa`` console command: ``fastcpa demo`` trains a CPA generator by exact EM.

    fastcpa demo                      # wave data (default), a few seconds
    fastcpa demo --dataset circle
    fastcpa demo --dataset digits     # scikit-learn's 8x8 digits (needs scikit-learn)
    fastcpa demo --output fit.png     # the figure's path (needs matplotlib: pip install ".[plot]")
"""

import argparse
import sys
import time

import numpy as np

DATASETS = ("wave", "circle", "digits")


def make_data(name, n, rng):
    """``(X, latent_dim, layer sizes)`` for a built-in dataset (noise 0.1 for wave and circle)."""
    if name == "wave":  # t ~ N(0, 1), x = (t, cos 1.4 t) + N(0, 0.1^2)
        t = rng.normal(size=n)
        return np.c_[t, np.cos(1.4 * t)] + 0.1 * rng.normal(size=(n, 2)), 1, [1, 16, 16, 2]
    if name == "circle":
        a = rng.uniform(0.0, 2.0 * np.pi, size=n)
        return np.c_[np.cos(a), np.sin(a)] + 0.1 * rng.normal(size=(n, 2)), 1, [1, 16, 16, 2]
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise SystemExit("--dataset digits needs scikit-learn: pip install scikit-learn") from None
        X = load_digits().data / 16.0
        X = X[rng.permutation(len(X))[:n]]
        return X, 2, [2, 16, X.shape[1]]
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def initial_generator(sizes, X, rng):
    """A leaky-ReLU generator whose output layer starts at the data's mean and scale."""
    import fastcpa

    Ws, cs = [], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        Ws.append(rng.normal(size=(b, a)) / np.sqrt(a))
        cs.append(0.1 * rng.normal(size=b))
    Ws[-1] *= X.std(axis=0).mean()
    cs[-1] = X.mean(axis=0)
    return fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1)


def demo(args):
    import fastcpa

    rng = np.random.default_rng(args.seed)
    X, S, sizes = make_data(args.dataset, 2 * args.n, rng)
    train, test = X[:args.n], X[args.n:]
    model = fastcpa.CPAModel(initial_generator(sizes, train, rng), sigma_x=float(train.std()))
    print(f"fastcpa demo: {args.dataset}, {len(train)} training and {len(test)} held-out samples, "
          f"generator {sizes} (leaky ReLU 0.1), exact EM for up to {args.iters} iterations")
    t0 = time.perf_counter()

    def report(i, ll, fit):
        if i == 1 or i % 10 == 0:
            print(f"  iteration {i:4d}: exact mean log-likelihood {ll:.6f}  "
                  f"({fit.partition.n_regions} regions, {time.perf_counter() - t0:.1f} s)", flush=True)

    print(f"  start         : exact mean log-likelihood {float(model.log_prob(train).mean()):.6f}", flush=True)
    model.fit(train, n_iter=args.iters, tol=args.tol, progress=args.progress, callback=report)
    held = float(model.log_prob(test).mean())
    print(f"done in {time.perf_counter() - t0:.1f} s: {model.partition.n_regions} regions, "
          f"sigma_x = {np.mean(model.sigma_x):.4f}")
    print(f"train log-likelihood {model.history_[-1]:.4f}, held-out {held:.4f} (exact, per sample)")
    if args.output:
        figure(model, train, args.output, rng)
    return model


def figure(model, X, path, rng):
    """Data with model samples, and the latent partition with the posterior of a few points."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no figure: matplotlib is not installed (pip install ".[plot]")')
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    if X.shape[1] == 2:
        Y = model.sample(len(X), seed=rng)
        ax1.scatter(*X.T, s=4, alpha=0.5, label="data")
        ax1.scatter(*Y.T, s=4, alpha=0.5, label="model samples")
        ax1.legend()
        ax1.set_title("data and model samples")
    else:  # images: the generator's output g(z) at prior draws (noise-free)
        G = model.generator(model.sigma_z * rng.normal(size=(32, model.generator.latent_dim)))
        ax1.imshow(np.vstack([np.hstack([y.reshape(8, 8) for y in G[i * 8:(i + 1) * 8]]) for i in range(4)]),
                   cmap="gray")
        ax1.set_axis_off()
        ax1.set_title("g(z) at 32 prior draws")
    post = model.posterior(X[:4])
    Z = post.sample(400, seed=rng)
    if model.generator.latent_dim == 1:
        iv = model.partition.intervals
        for lo in iv[1:, 0]:
            ax2.axvline(lo, color="0.85", lw=0.8)
        for k in range(4):
            ax2.hist(Z[k, :, 0], bins=60, density=True, histtype="step", label=f"p(z | x_{k})")
        ax2.set_xlabel("z (region boundaries in grey)")
        ax2.legend()
    else:
        g = np.linspace(-3, 3, 300)
        G = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        ax2.imshow((model.partition.locate(G) * 7919 % 97).reshape(300, 300), extent=(-3, 3, -3, 3),
                   origin="lower", cmap="Pastel1", interpolation="nearest")
        for k in range(4):
            ax2.scatter(*Z[k].T, s=2, label=f"p(z | x_{k})")
        ax2.legend(markerscale=4)
    ax2.set_title("latent partition and exact posterior samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure written to {path}")


def main(argv=None):
    """Entry point of the ``fastcpa`` console command."""
    ap = argparse.ArgumentParser(prog="fastcpa", description="Exact inference for CPA generative networks.")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a CPA generator by exact EM on built-in data")
    d.add_argument("--dataset", choices=DATASETS, default="wave")
    d.add_argument("--n", type=int, default=500, help="training samples (as many held out)")
    d.add_argument("--iters", type=int, default=100, help="largest number of EM iterations")
    d.add_argument("--tol", type=float, default=1e-5, help="stop when an iteration gains less (nats/sample)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--output", default="fastcpa-demo.png", help="figure path ('' for none)")
    d.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    d.set_defaults(progress=None)
    args = ap.parse_args(argv)
    if args.command == "demo":
        demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
