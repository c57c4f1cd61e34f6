"""The latent explorer: a static page (index.html) and the tool that makes its points."""
