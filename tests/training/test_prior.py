"""The sampling factor the export writes and the draws the figures make from it."""

import numpy as np
import pytest
import torch

from training.prior import draw, gaussian_prior, sampling_factor


def test_factor_reproduces_a_singular_covariance_without_jitter():
    a = np.array([[1.0], [2.0], [-1.0]])
    cov = a @ a.T  # rank 1: a Cholesky fails here
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(cov)
    factor = sampling_factor(cov)
    assert np.isfinite(factor).all()
    assert np.allclose(factor @ factor.T, cov, atol=1e-12)


def test_draws_follow_the_prior():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    mean, cov = np.array([1.0, -2.0, 0.5]), a @ a.T
    prior = gaussian_prior(mean, cov)
    assert prior["type"] == "gaussian" and np.allclose(prior["cov"], cov)
    z = draw(prior, 3, 50_000, seed=1).numpy()
    assert np.allclose(z.mean(0), mean, atol=0.05)
    assert np.allclose(np.cov(z, rowvar=False), cov, atol=0.05 * np.abs(cov).max())
    assert torch.equal(draw(prior, 3, 4, seed=2), draw(prior, 3, 4, seed=2))


def test_standard_normal_and_unknown_priors():
    z = draw({"type": "standard_normal"}, 2, 5, seed=0)
    assert z.shape == (5, 2) and z.dtype == torch.double
    with pytest.raises(ValueError, match="unknown prior type 'laplace'"):
        draw({"type": "laplace"}, 2, 5)
