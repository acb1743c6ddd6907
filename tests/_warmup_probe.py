"""Run as a script (``python tests/_warmup_probe.py``) by ``test_warmup.py``.

Calls ``fastcpa.warmup()``, snapshots the compiled signatures of every Numba
dispatcher in ``fastcpa.kernels``, exercises the public API on small models,
and prints (as JSON) the signatures that the API compiled after the warmup:
an empty object when the warmup covered everything. Importing this module
does nothing (pytest's doctest collection imports every file here).
"""

import json
import sys
import time


def dispatchers():
    """Every Numba dispatcher reachable from the loaded ``fastcpa.kernels`` modules,
    including the per-target copies of the scalar routines."""
    from numba.core.dispatcher import Dispatcher

    found = {}

    def scan(prefix, namespace):
        for name, obj in namespace.items():
            # the kernels themselves are wrapped (kernels/cpu/_jit.py): their dispatcher too, so
            # that a signature loaded from a warm cache counts (nested routines' do not show then)
            obj = getattr(obj, "dispatcher", obj)
            if isinstance(obj, Dispatcher):
                found.setdefault(f"{prefix}.{name}", obj)

    for modname, mod in list(sys.modules.items()):
        if modname.startswith("fastcpa.kernels") and mod is not None:
            scan(modname, vars(mod))
    from fastcpa.kernels.cpu import _jit

    for modname, ns in _jit._SCALARS.items():
        scan(f"{modname}[cpu]", vars(ns))
    return found


def signatures():
    return {name: sorted(str(s) for s in d.signatures) for name, d in dispatchers().items()}


def exercise():
    """The public API on small S = 1 and S = 2 models, in the ways a user calls it."""
    import numpy as np

    import fastcpa

    rng = np.random.default_rng(1)
    # Gaussian integrals: scalars, broadcasting arrays, infinite ends
    fastcpa.interval_moments(0.0, 1.0)
    fastcpa.interval_moments([-1.0, 40.0], [1.0, np.inf], [0.0, 0.5], 2.0)
    fastcpa.interval_moments(np.array([[-np.inf], [0.0]]), np.array([0.5, 1.0, np.inf]))
    fastcpa.polygon_moments([[1.0, 0.0], [0.0, 1.0]], [-9.0, -8.0])
    fastcpa.polygon_moments([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], moments=False)
    normals = rng.normal(size=(5, 3, 2))
    fastcpa.polygon_moments(normals, rng.normal(size=(5, 3)), rng.normal(size=2), [[2.0, 0.3], [0.3, 1.0]])
    fastcpa.polygon_moments(normals, rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), moments=False)
    fastcpa.polygon_moments(np.zeros((0, 2)), np.zeros(0))

    def net(S, widths, activation):
        sizes = [S, *widths]
        return fastcpa.Generator([rng.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:])],
                                 [rng.normal(size=o) for o in sizes[1:]], activation=activation, slope=0.1)

    for S in (1, 2):
        for activation in ("relu", "leaky_relu", "abs"):
            gen = net(S, [6, 5, 3], activation)
            part = fastcpa.partition(gen)
            Z = rng.normal(size=(7, S))
            gen(Z)
            part.locate(Z)
            part.locate(Z[:1])
            part.is_bounded()
            part.facets(0)
            part.facet_neighbor
            if S == 2:
                part.polygon(0)
        gen = net(S, [8, 3], "leaky_relu")
        for sigma in (0.3, np.full(3, 0.3) * [1.0, 0.5, 2.0]):
            model = fastcpa.CPAModel(gen, sigma_x=sigma)
            X = model.sample(30, seed=2)
            X, Z = model.sample(30, seed=2, return_latent=True)
            model.log_prob(X)
            model.log_prob(X, prune=False)
            model.log_prob(X[:1] + 40.0)
            post = model.posterior(X)
            post.sample(3, seed=3)
            post.log_density(Z)
            st = model.sufficient_stats(X)
            model.sufficient_stats(X[:1])  # a one-row chunk (Numba types its region-major views C)
            model.sufficient_stats(X, region_chunk=1)  # one-region chunks, likewise
            st.noise_update(model.partition.A, model.partition.b, diagonal=np.ndim(sigma) == 1)
            model.marginal_moments()
            fastcpa.em.log_likelihood_gradient(model, X)
            for method in ("em", "gradient"):
                fastcpa.CPAModel(gen, sigma_x=sigma).fit(X, n_iter=2, tol=-np.inf, method=method, progress=False)
    # read-only data, as a memory map or pandas' copy-on-write arrays give
    Xr = X.copy()
    Xr.setflags(write=False)
    model.log_prob(Xr)
    model.posterior(Xr)
    model.sufficient_stats(Xr)
    fastcpa.interval_moments(np.full(3, 0.5), 2.0, np.zeros(3), np.ones(3))
    # affine generators (one region: whole-space pairs), S = 1, 2 and 3
    for S in (1, 2, 3):
        gen = fastcpa.Generator([rng.normal(size=(4, S)), rng.normal(size=(3, 4))],
                                [rng.normal(size=4), rng.normal(size=3)], activation="linear")
        model = fastcpa.CPAModel(gen, sigma_x=0.5)
        X = model.sample(20, seed=4)
        model.log_prob(X)
        model.posterior(X).sample(2, seed=5)
        model.marginal_moments()
        model.fit(X, n_iter=2, tol=-np.inf, progress=False)
        X.setflags(write=False)
        model.log_prob(X)
        model.posterior(X)


def main():
    import fastcpa

    t0 = time.perf_counter()
    fastcpa.warmup()
    t1 = time.perf_counter()
    before = signatures()
    exercise()
    t2 = time.perf_counter()
    after = signatures()
    gained = {k: sorted(set(v) - set(before.get(k, []))) for k, v in after.items()}
    gained = {k: v for k, v in gained.items() if v}
    print(json.dumps({"gained": gained, "n_dispatchers": len(after),
                      "n_compiled": sum(bool(v) for v in before.values()),
                      "warmup_s": t1 - t0, "exercise_s": t2 - t1}))


if __name__ == "__main__":
    main()
