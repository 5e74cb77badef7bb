"""Golden DOT files of the pictures the README shows: reviewed like code.

Regenerate after an intended change with ``NN2PGM_UPDATE_GOLDEN=1 pytest tests/backends``
and look at the rendered pictures before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nn2pgm

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = {
    "vae_full": ("fixtures/vae.py:VAE", {}),
    "vae_latent": ("fixtures/vae.py:VAE", {"view": "latent"}),
    "vae_augmented": ("fixtures/vae.py:VAE", {"view": "augmented"}),
    "vae_augmented_prescribed": (
        "fixtures/vae.py:VAE",
        {"view": "augmented", "likelihood": ["sigmoid=bernoulli"]},
    ),
    "gan_augmented": (
        "fixtures/dcgan.py:Generator",
        {
            "view": "augmented",
            "latent": ["input"],
            "discriminator": "fixtures/dcgan.py:Discriminator",
        },
    ),
    "gpt2_collapsed": ("fixtures/gpt2.py:GPT2", {"collapse_repeats": True}),
    "vae_units": ("fixtures/vae.py:VAE", {"granularity": "unit"}),
    "vae_latent_units": ("fixtures/vae.py:VAE", {"view": "latent", "granularity": "unit"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dot_matches_golden(name):
    source, options = CASES[name]
    options = dict(options)
    unit = options.pop("granularity", None) == "unit"
    graph = nn2pgm.convert(source, **options)
    if unit:
        nn2pgm.units(graph)
    text = nn2pgm.to_dot(graph)
    path = GOLDEN / f"{name}.dot"
    if os.environ.get("NN2PGM_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
