"""The two-slice template of an unrolled recurrent graph as a pgmpy
``DynamicBayesianNetwork``: nodes ``(X, 0)`` and ``(X, 1)``, edges within slice 0 (pgmpy repeats
them in slice 1) and from slice 0 to 1.

What it holds and what it cannot: the structure only. The CPDs of an RNN's states are
deterministic functions of continuous vectors; pgmpy's DBN takes ``TabularCPD`` (discrete) CPDs
only, so the states' computation stays in nn2pgm's executor (``nn2pgm.sample`` on the unrolled
graph), and pgmpy's ``DBNInference`` / ``simulate`` cannot run on this model.
"""

from __future__ import annotations

from typing import Any


def to_dbn(template: dict[str, Any]) -> Any:
    """A ``DynamicBayesianNetwork`` over ``template``'s variables and edges
    (:func:`nn2pgm.passes.unroll.template`)."""
    from pgmpy.models import DynamicBayesianNetwork

    dbn = DynamicBayesianNetwork()
    dbn.add_nodes_from(template["variables"])
    dbn.add_edges_from(((e["source"], 0), (e["target"], e["lag"])) for e in template["edges"])
    return dbn
