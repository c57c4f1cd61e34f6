import math

import pytest
import torch

from training.losses import (
    autoencoder_loss,
    gaussian_log_prob,
    kl_to_standard_normal,
    reconstruction,
    reparameterize,
)
from training.models import ModelConfig, SubPixelConvTranspose2d, build_model


@pytest.mark.parametrize("body", ["mlp", "conv"])
@pytest.mark.parametrize("latent", [1, 2, 16, 33])
def test_shapes_for_both_kinds(body, latent):
    x = torch.rand(5, 1, 28, 28)
    vae = build_model(ModelConfig("vae", body, latent))
    mean, log_var = vae.encoder(x)
    assert mean.shape == log_var.shape == (5, latent)
    assert vae.decoder(mean).shape == (5, 1, 28, 28)
    ae = build_model(ModelConfig("ae", body, latent))
    z = ae.encoder(x)
    assert isinstance(z, torch.Tensor) and z.shape == (5, latent)
    assert ae.decoder(z).shape == (5, 1, 28, 28)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="gan")
    with pytest.raises(ValueError, match="C 1 or 3"):
        ModelConfig(image_shape=(2, 28, 28))
    with pytest.raises(ValueError, match="H and W"):
        ModelConfig(image_shape=(1, 0, 28))
    with pytest.raises(ValueError, match="channels"):
        ModelConfig(channels=(32, 0, 96))


def test_kl_matches_closed_form_for_known_gaussians():
    # KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, per dimension
    mu = torch.tensor([[0.0, 1.0, -2.0]])
    s = torch.tensor([[1.0, 0.5, 2.0]])
    expected = sum(
        math.log(1 / si) + (si**2 + mi**2) / 2 - 0.5
        for mi, si in zip(mu[0].tolist(), s[0].tolist(), strict=True)
    )
    got = kl_to_standard_normal(mu, torch.log(s**2))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert kl_to_standard_normal(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0


def test_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mean, log_var = torch.tensor([[0.5, -1.0]]), torch.tensor([[-0.5, 0.3]])
    z = reparameterize(mean.expand(200_000, 2), log_var.expand(200_000, 2))
    mc = (gaussian_log_prob(z, mean, log_var) - gaussian_log_prob(z, 0 * z, 0 * z)).mean()
    assert mc.item() == pytest.approx(kl_to_standard_normal(mean, log_var).item(), abs=0.02)


def test_gradients_flow_through_the_sample():
    mean = torch.zeros(3, 4, requires_grad=True)
    log_var = torch.zeros(3, 4, requires_grad=True)
    reparameterize(mean, log_var).pow(2).sum().backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    assert log_var.grad is not None and log_var.grad.abs().sum() > 0


def test_reparameterize_is_seeded():
    m, lv = torch.zeros(2, 3), torch.zeros(2, 3)
    a = reparameterize(m, lv, torch.Generator().manual_seed(7))
    b = reparameterize(m, lv, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_reconstruction_terms():
    x = torch.tensor([[[[0.0, 1.0]]]])
    logits = torch.tensor([[[[0.0, 0.0]]]])
    assert reconstruction(logits, x, "bce").item() == pytest.approx(2 * math.log(2))
    assert reconstruction(logits, x, "mse").item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        reconstruction(logits, x, "l1")


def test_loss_of_a_model_trains_downward():
    torch.manual_seed(0)
    model = build_model(ModelConfig("vae", "mlp", 4, hidden=32))
    x = torch.rand(16, 1, 28, 28).round()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = autoencoder_loss(model, x).total.item()
    for _ in range(30):
        terms = autoencoder_loss(model, x)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
    assert terms.total.item() < first
    assert terms.kl.shape == (16,) and (terms.kl >= 0).all()


@pytest.mark.parametrize("kernel, output_padding", [(4, 0), (3, 0), (3, 1)])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_subpixel_transposed_conv_is_the_transposed_conv(kernel, output_padding, out_channels):
    """Same parameters, outputs and gradients as nn.ConvTranspose2d (stride 2, padding 1)."""
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(5, out_channels, kernel, 2, 1, output_padding=output_padding)
    fast = SubPixelConvTranspose2d(5, out_channels, kernel, output_padding=output_padding)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 7, 6)
    y_ref, y_fast = ref(x), fast(x)
    assert y_fast.shape == y_ref.shape
    assert torch.allclose(y_fast, y_ref, atol=1e-5)
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()
    (y_fast * g).sum().backward()
    assert torch.allclose(fast.weight.grad, ref.weight.grad, atol=1e-4)
    assert torch.allclose(fast.bias.grad, ref.bias.grad, atol=1e-4)
    scripted = torch.jit.script(fast)
    assert torch.allclose(scripted(x), y_fast, atol=1e-6)


def test_subpixel_transposed_conv_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="kernel 3 or 4"):
        SubPixelConvTranspose2d(4, 1, 5)
    with pytest.raises(ValueError, match="groups 1"):
        SubPixelConvTranspose2d(4, 2, 4, groups=2)


def test_conv_decoder_keeps_the_transposed_conv_state_dict_keys():
    """Older checkpoints and TorchScript files load into the decoder unchanged."""
    keys = set(build_model(ModelConfig("vae", "conv", 8)).decoder.state_dict())
    assert {"net.5.weight", "net.7.weight", "net.9.weight", "net.9.bias"} <= keys
