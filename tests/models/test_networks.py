"""The comparison's networks: tanh or gated hidden layers."""

import pyro
import pytest
import torch

from pyro_mapa.experiments import Split, load_split, train_and_score
from pyro_mapa.models import GatedDense, NormalLikelihood, make_decoder, make_encoder


def test_a_gated_layer_is_a_linear_map_times_the_sigmoid_of_another():
    layer = GatedDense(3, 4)
    x = torch.randn(5, 3)
    weight, bias = layer.linear.weight, layer.linear.bias  # (8, 3): h's rows, then g's
    h, g = x @ weight[:4].T + bias[:4], x @ weight[4:].T + bias[4:]
    assert torch.allclose(layer(x), h * torch.sigmoid(g), atol=1e-6)


@pytest.mark.parametrize("layers, hidden_parameters", [("tanh", 1), ("gated", 2)])
def test_decoder_and_encoder_shapes_and_sizes(layers, hidden_parameters):
    d, D, H = 2, 7, 5
    decoder, encoder = make_decoder(d, D, H, layers), make_encoder(D, d, H, layers)
    assert decoder(torch.randn(4, d)).shape == (4, D) and encoder(torch.randn(4, D)).shape == (4, 2 * d)
    size = sum(p.numel() for p in decoder.parameters())
    assert size == hidden_parameters * ((d + 1) * H + (H + 1) * H) + (H + 1) * D  # gated: twice the hidden maps


def test_the_tanh_decoder_keeps_its_parameter_names():  # saved models (pyro-mapa train) load by these names
    assert list(make_decoder(2, 3, 4).state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def test_unknown_layers_are_refused():
    with pytest.raises(ValueError, match="layers must be one of"):
        make_decoder(2, 3, 4, "relu")
    with pytest.raises(ValueError, match="layers must be one of"):
        load_split("spiral-dots", 50, layers="relu")
    with pytest.raises(ValueError, match="layers must be one of"):
        Split("x", torch.zeros(5, 2), torch.zeros(2, 2), torch.zeros(2, 2), NormalLikelihood(0.1), 1, layers="relu")


@pytest.mark.parametrize("method", ["vae", "mapa-1-2"])
def test_the_comparison_trains_gated_networks(method):
    split = load_split("spiral-dots", 100, layers="gated", hidden=6)
    assert split.describe().endswith("hidden 6 x 2 gated")
    trained = {}

    def keep(decoder, prior, codes):
        trained["decoder"] = decoder

    result = train_and_score(method, split, 0, 600, batch_size=20, num_checkpoints=1, eval_particles=10,
                             test_particles=10, max_test_particles=10, inspect=keep)
    assert isinstance(trained["decoder"][0], GatedDense) and isinstance(trained["decoder"][1], GatedDense)
    encoder_layers = {name for name in pyro.get_param_store().keys() if name.startswith("encoder$$$")}
    assert encoder_layers == ({"encoder$$$0.linear.weight", "encoder$$$0.linear.bias", "encoder$$$1.linear.weight",
                               "encoder$$$1.linear.bias", "encoder$$$2.weight", "encoder$$$2.bias"}
                              if method == "vae" else set())  # the VAE's encoder is gated too
    assert result.total_passes >= 600 and torch.isfinite(torch.tensor(result.test_ll))
