"""Generator.from_torch: conversion of torch.nn.Sequential networks."""

import importlib.util
import os

import numpy as np
import pytest

if os.environ.get("CI") == "true" and importlib.util.find_spec("torch") is None:
    # CI installs the torch extra: a missing torch there is a failure, not a skip.
    raise ImportError('CI=true but torch is not installed; install it with pip install "fastcpa[torch]".')
torch = pytest.importorskip("torch")
nn = torch.nn

from fastcpa.generator import Generator  # noqa: E402

pytestmark = pytest.mark.torch


# ---------------------------------------------------------------------------- helpers
def _randomize(net, rng):
    """Deterministic float64 parameters (and BatchNorm statistics) from ``rng``; eval mode."""
    net.double()
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, nn.Linear):
                fan_in = layer.weight.shape[1]
                layer.weight.copy_(torch.from_numpy(rng.standard_normal(layer.weight.shape) / np.sqrt(fan_in)))
                if layer.bias is not None:
                    layer.bias.copy_(torch.from_numpy(0.5 * rng.standard_normal(layer.bias.shape)))
            elif isinstance(layer, nn.BatchNorm1d):
                n = layer.num_features
                if layer.running_mean is not None:
                    layer.running_mean.copy_(torch.from_numpy(rng.standard_normal(n)))
                    layer.running_var.copy_(torch.from_numpy(rng.uniform(0.3, 3.0, n)))
                if layer.weight is not None:
                    layer.weight.copy_(torch.from_numpy(rng.uniform(-2.0, 2.0, n)))
                    layer.bias.copy_(torch.from_numpy(rng.standard_normal(n)))
            elif isinstance(layer, nn.PReLU):
                layer.weight.copy_(torch.from_numpy(rng.uniform(-0.5, 0.8, layer.weight.shape)))
    return net.eval()


def _check_matches(net, seed=0, n=500):
    rng = np.random.default_rng(seed)
    _randomize(net, rng)
    gen = Generator.from_torch(net)
    Z = 2.0 * rng.standard_normal((n, gen.latent_dim))
    with torch.no_grad():
        expected = net(torch.from_numpy(Z)).numpy()
    got = gen(Z)
    assert got.shape == expected.shape
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) <= 1e-12 * scale
    return gen


# ---------------------------------------------------------------------------- forward-pass agreement
@pytest.mark.parametrize("latent", [1, 2])
def test_relu(latent):
    net = nn.Sequential(nn.Linear(latent, 12), nn.ReLU(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))
    gen = _check_matches(net, seed=latent)
    assert gen.latent_dim == latent and gen.widths == (12, 9) and gen.output_dim == 4
    assert gen.activations == ["relu", "relu"]
    assert all(np.all(eta == 0.0) for eta in gen.slopes)


@pytest.mark.parametrize("latent", [1, 2])
def test_leaky_relu(latent):
    net = nn.Sequential(nn.Linear(latent, 10), nn.LeakyReLU(0.2), nn.Linear(10, 8), nn.LeakyReLU(0.05), nn.Linear(8, 3))
    gen = _check_matches(net, seed=10 + latent)
    assert gen.activations == ["leaky_relu", "leaky_relu"]
    np.testing.assert_array_equal(gen.slopes[0], np.full(10, 0.2))
    np.testing.assert_array_equal(gen.slopes[1], np.full(8, 0.05))


def test_prelu_scalar():
    net = nn.Sequential(nn.Linear(2, 7), nn.PReLU(), nn.Linear(7, 3))
    gen = _check_matches(net, seed=3)
    assert gen.activations == ["prelu"]
    a = float(net[1].weight.item())
    assert a != 0.25  # randomized, not the default
    np.testing.assert_array_equal(gen.slopes[0], np.full(7, a))


def test_prelu_per_unit():
    net = nn.Sequential(nn.Linear(2, 7), nn.PReLU(7), nn.Linear(7, 6), nn.PReLU(6), nn.Linear(6, 2))
    gen = _check_matches(net, seed=4)
    assert gen.activations == ["prelu", "prelu"]
    np.testing.assert_array_equal(gen.slopes[0], net[1].weight.detach().numpy())
    assert len(np.unique(gen.slopes[1])) == 6


def test_mixed_activations():
    net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 6), nn.LeakyReLU(0.3), nn.Linear(6, 5), nn.PReLU(5),
                        nn.Linear(5, 2))
    gen = _check_matches(net, seed=5)
    assert gen.activations == ["relu", "leaky_relu", "prelu"]


def test_identity_and_dropout_eval_are_skipped():
    net = nn.Sequential(nn.Identity(), nn.Linear(2, 8), nn.Dropout(0.5), nn.ReLU(), nn.Identity(), nn.Dropout(0.1),
                        nn.Linear(8, 3), nn.Identity())
    gen = _check_matches(net, seed=6)
    assert gen.widths == (8,) and gen.n_layers == 2


def test_batchnorm_after_linear():
    net = nn.Sequential(nn.Linear(2, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 8), nn.BatchNorm1d(8),
                        nn.LeakyReLU(0.1), nn.Linear(8, 3))
    gen = _check_matches(net, seed=7)
    assert gen.widths == (10, 8) and gen.n_layers == 3


def test_batchnorm_after_activation():
    net = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.BatchNorm1d(10), nn.Linear(10, 8), nn.ReLU(),
                        nn.BatchNorm1d(8), nn.Linear(8, 3))
    gen = _check_matches(net, seed=8)
    assert gen.widths == (10, 8) and gen.n_layers == 3


def test_batchnorm_first_and_last_and_between_activations():
    # Input-side fold into the first Linear, output-side fold into the last,
    # and a BatchNorm alone between two activations (a diagonal hidden layer).
    net = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.ReLU(),
                        nn.Linear(6, 3), nn.BatchNorm1d(3))
    gen = _check_matches(net, seed=9)
    assert gen.widths == (6, 6)
    np.testing.assert_array_equal(gen.weights[1], np.diag(np.diag(gen.weights[1])))


def test_batchnorm_affine_false_and_momentum_none():
    net = nn.Sequential(nn.Linear(2, 6), nn.BatchNorm1d(6, affine=False), nn.ReLU(),
                        nn.BatchNorm1d(6, momentum=None, eps=1e-3), nn.Linear(6, 2))
    _check_matches(net, seed=10)


def test_linear_without_bias():
    net = nn.Sequential(nn.Linear(2, 9, bias=False), nn.ReLU(), nn.Linear(9, 4, bias=False))
    gen = _check_matches(net, seed=11)
    assert all(np.all(c == 0.0) for c in gen.biases)


def test_consecutive_linears_are_folded():
    net = nn.Sequential(nn.Linear(2, 7), nn.Linear(7, 5, bias=False), nn.ReLU(), nn.Linear(5, 6), nn.Linear(6, 4),
                        nn.Linear(4, 3))
    gen = _check_matches(net, seed=12)
    assert gen.n_layers == 2 and gen.widths == (5,) and gen.activations == ["relu"]


def test_single_linear():
    net = nn.Sequential(nn.Linear(2, 3))
    gen = _check_matches(net, seed=13)
    assert gen.n_layers == 1 and gen.widths == ()


def test_deep_five_layers():
    net = nn.Sequential(
        nn.Linear(2, 16), nn.ReLU(),
        nn.Linear(16, 16), nn.BatchNorm1d(16), nn.LeakyReLU(0.1),
        nn.Linear(16, 16), nn.PReLU(16),
        nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(16, 5),
    )
    gen = _check_matches(net, seed=14, n=1000)
    assert gen.n_layers == 5 and gen.widths == (16, 16, 16, 16)


def test_nested_sequential_is_flattened():
    block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 8), nn.ReLU()), block, nn.Sequential(nn.Linear(8, 3)))
    gen = _check_matches(net, seed=15)
    assert gen.widths == (8, 8)


def test_float32_module_is_copied_as_float64():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 1)).eval()
    gen = Generator.from_torch(net)
    assert gen.weights[0].dtype == np.float64
    np.testing.assert_array_equal(gen.weights[0], net[0].weight.detach().numpy().astype(np.float64))
    Z = np.random.default_rng(16).standard_normal((50, 2)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(Z)).numpy()
    np.testing.assert_allclose(gen(Z), expected, rtol=1e-5, atol=1e-5)


def test_parameters_requiring_grad_and_converted_copy_is_independent():
    net = _randomize(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), np.random.default_rng(17))
    gen = Generator.from_torch(net)
    before = gen.weights[0].copy()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    np.testing.assert_array_equal(gen.weights[0], before)


# ---------------------------------------------------------------------------- rejections
@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.GELU, nn.Softplus, nn.ELU, nn.SiLU])
def test_smooth_activation_rejected(act):
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), act(), nn.Linear(4, 1))
    with pytest.raises(TypeError, match=rf"layer 3 \({act.__name__}\) is not piecewise-affine"):
        Generator.from_torch(net.eval())


def test_other_piecewise_affine_activation_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU6(), nn.Linear(4, 1))
    with pytest.raises(TypeError, match=r"layer 1 \(ReLU6\).*two-slope"):
        Generator.from_torch(net)


def test_unsupported_layer_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Conv1d(1, 1, 1), nn.Linear(4, 1))
    with pytest.raises(TypeError, match=r"layer 2 \(Conv1d\) is not supported"):
        Generator.from_torch(net)


def test_nested_layer_named_by_path():
    net = nn.Sequential(nn.Linear(2, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 1))
    with pytest.raises(TypeError, match=r"layer 1\.2 \(Tanh\)"):
        Generator.from_torch(net)


def test_dropout_train_mode_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 1)).train()
    with pytest.raises(ValueError, match=r"layer 2 \(Dropout\) is in training mode.*\.eval\(\)"):
        Generator.from_torch(net)


def test_batchnorm_train_mode_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).train()
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm1d\) is in training mode.*\.eval\(\)"):
        Generator.from_torch(net)


def test_batchnorm_without_running_stats_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.ReLU(),
                        nn.Linear(4, 1)).eval()
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm1d\) has no running statistics"):
        Generator.from_torch(net)


def test_activation_last_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.ReLU())
    with pytest.raises(ValueError, match=r"layer 3 \(ReLU\) is the last layer"):
        Generator.from_torch(net)


def test_activation_first_rejected():
    net = nn.Sequential(nn.LeakyReLU(), nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"layer 0 \(LeakyReLU\) comes before any Linear"):
        Generator.from_torch(net)


def test_two_activations_in_a_row_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Dropout(0.1), nn.PReLU(), nn.Linear(4, 1)).eval()
    with pytest.raises(ValueError, match=r"layer 1 \(ReLU\) and layer 3 \(PReLU\) are two activations in a row"):
        Generator.from_torch(net)


def test_empty_sequential_rejected():
    with pytest.raises(ValueError, match="nn.Sequential is empty"):
        Generator.from_torch(nn.Sequential())
    with pytest.raises(ValueError, match="has no Linear layer"):
        Generator.from_torch(nn.Sequential(nn.Identity()))


def test_sizes_that_do_not_chain_rejected():
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\) expects 5 input features but layer 0 \(Linear\) produces 4"):
        Generator.from_torch(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(5, 1)))
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm1d\) expects 3 input features"):
        Generator.from_torch(nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(4, 1)).eval())


def test_prelu_wrong_num_parameters_rejected():
    net = nn.Sequential(nn.Linear(2, 4), nn.PReLU(3), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"layer 1 \(PReLU\) has num_parameters=3"):
        Generator.from_torch(net)


def test_not_a_sequential_rejected():
    with pytest.raises(TypeError, match="expects a torch.nn.Sequential, got Linear"):
        Generator.from_torch(nn.Linear(2, 3))


def test_lazy_linear_not_initialised_rejected():
    net = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="not initialised"):
        Generator.from_torch(net)
