"""Shared fixtures: fixture models are built once per session (GPT-2 takes seconds)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fuzz tests (tests/test_fuzz*.py): the default profile is small and derandomized (the same
# examples in every run, seconds in all); `--hypothesis-profile long` runs hundreds per test.
_FUZZ = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
settings.register_profile("default", max_examples=60, derandomize=True, **_FUZZ)
settings.register_profile("long", max_examples=250, derandomize=False, **_FUZZ)
settings.load_profile("default")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (source spec, stochastic in eval mode)
FIXTURES = {
    "vae": "fixtures/vae.py:VAE",
    "vae_decoder": "fixtures/vae.py:VAEDecoder",
    "distributions_vae": "fixtures/vae.py:DistributionsVAE",
    "dcgan_generator": "fixtures/dcgan.py:Generator",
    "dcgan_discriminator": "fixtures/dcgan.py:Discriminator",
    "mlp": "fixtures/mlp.py:MLPClassifier",
    "lenet": "fixtures/lenet.py:LeNet",
    "char_lstm": "fixtures/char_lstm.py:CharLSTM",
    "resnet50": "fixtures/resnet.py:ResNet50",
    "gpt2": "fixtures/gpt2.py:GPT2",
}
SMALL = [
    "vae",
    "vae_decoder",
    "distributions_vae",
    "dcgan_generator",
    "dcgan_discriminator",
    "mlp",
    "lenet",
    "char_lstm",
]


def build(spec: str):
    """Build a fixture model from its ``file.py:Name`` spec."""
    path, name = spec.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)()


@pytest.fixture(scope="session")
def models():
    """Lazily built fixture models, one instance each per test session."""
    cache: dict = {}

    def get(key: str):
        if key not in cache:
            cache[key] = build(FIXTURES[key])
        return cache[key]

    return get


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def nn2pgm_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the command in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
