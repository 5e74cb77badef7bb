"""Semantic check: does the graphical model behave like the network?

Two tests, on random inputs of each input's dtype and range:

- **same noise** (exact): the network runs once; the values its random ops drew are captured and
  fixed in the graph with ``do=``; every output must then agree to ``rtol``.
- **free sampling** (in distribution, for graphs with latent variables): both sides sample with
  independent noise at a few inputs, many samples each; a two-sample Kolmogorov–Smirnov test
  per output coordinate, and per output and latent the kernel tests of :mod:`.energy` (MMD and
  density shift, permutations within each input), Bonferroni-corrected over the tests, must
  not reject at ``alpha``. ``exact=False`` runs this part alone.

Values that are not finite are reported, never compared as numbers (NaN == NaN is no
agreement): a network output that is NaN on the random inputs means the check can say nothing
(:class:`CheckError`, exit 2); ``inf`` in the network's output must be matched by the same
``inf`` in the graph's; a graph output that is NaN or infinite where the network's is finite
fails the check, naming the first node where the graph's values stop being finite.

The network runs as written (:mod:`.reference`: the torch module with a capture of its random
calls' outputs, in order; onnxruntime for an ONNX file); the graph's random nodes are fixed to
those draws by their ``random_index`` (:mod:`.noise` says how). verify imports neither a
frontend nor a backend: a pgmpy model to sample instead of the executor comes in as
``sampler=`` from the public API.
"""

from .check import check_graph, input_high, random_inputs
from .reference import RandomCapture, flatten_outputs, run_network
from .report import CheckError, CheckReport, OutputReport
from .stats import MAX_COORDINATES, ks_two_sample

__all__ = [
    "MAX_COORDINATES",
    "CheckError",
    "CheckReport",
    "OutputReport",
    "RandomCapture",
    "check_graph",
    "flatten_outputs",
    "input_high",
    "ks_two_sample",
    "random_inputs",
    "run_network",
]
