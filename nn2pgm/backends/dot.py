"""DOT backend: a graph drawn the way a probabilistic modeller draws it, for Graphviz.

Random variables are ellipses, shaded when observed and white when latent; deterministic
nodes (Delta CPDs) are rounded boxes. Labels read ``fc1 = Linear [400]`` for a deterministic
node and ``z ~ Normal [20]`` for a stochastic one (one sample's shape, batch dimensions
dropped), with the parameter count below in small type. Edge styles follow the augmented
picture of Hu et al. (2017): generative and plain data flow solid, inference dashed,
adversarial blue, and a hollow arrowhead into a deterministic transformation that leads to an
implicit distribution. Nodes are grouped into clusters by module path, nested along the dotted
hierarchy, and a legend explains the styles the drawing uses. The plates of
``graph.model["plates"]`` (see :mod:`.plates`) are boxes labelled at their bottom right; a
module cluster is drawn inside a plate that holds all its nodes, and not at all where it would
cross a plate's border.

>>> from nn2pgm.ir import Graph, Node
>>> g = Graph({"name": "tiny"})
>>> _ = g.add(Node("x", "input", kind="stochastic", observed=True, shape=("N", 2)))
>>> 'fillcolor=lightgrey' in to_dot(g)
True
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

from ..errors import Nn2pgmError, UsageError
from ..ir import DETERMINISTIC, Graph, Node, event_shape, is_tuple_shape
from ._files import Paths, atomic_write, check_output
from .plates import PlateLayout, nest, plate_layout

RENDER_FORMATS = {".svg": "svg", ".png": "png"}

# Node styles: shape tells deterministic (box) from random (ellipse); shading tells observed.
OBSERVED = "shape=ellipse, style=filled, fillcolor=lightgrey"
LATENT = "shape=ellipse, style=filled, fillcolor=white"
DETERMINISTIC_STYLE = 'shape=box, style="rounded,filled", fillcolor=white'
OBSERVED_DETERMINISTIC = 'shape=box, style="rounded,filled", fillcolor=lightgrey'
AUXILIARY = 'shape=box, style="rounded,filled,bold", fillcolor=white, color=blue'
NODE_LEGEND = {
    OBSERVED: "observed",
    LATENT: "latent (stochastic)",
    DETERMINISTIC_STYLE: "deterministic (δ CPD)",
    OBSERVED_DETERMINISTIC: "observed, deterministic",
    AUXILIARY: "auxiliary (discriminator)",
}

# Edge styles by edge kind; kinds not listed are drawn solid.
EDGE_STYLES = {
    "deterministic": "",
    "generative": "",
    "inference": "style=dashed",
    "adversarial": "color=blue",
    "implicit": "arrowhead=onormal",
}
EDGE_LEGEND = {
    "deterministic": "deterministic (data flow)",
    "generative": "generative",
    "inference": "inference q(z | x)",
    "adversarial": "adversarial",
    "implicit": "to an implicit distribution",
}


class RenderError(Nn2pgmError, RuntimeError):
    """Graphviz could not turn DOT text into a picture."""


# -- DOT text ---------------------------------------------------------------------------------
def to_dot(graph: Graph) -> str:
    """The graph as Graphviz DOT text (same graph, same string)."""
    nodes = list(graph)
    lines = ["digraph nn2pgm {"]
    attrs = ['fontname="Helvetica"', "rankdir=TB", "nodesep=0.25", "ranksep=0.35"]
    if "name" in graph.model:
        title = str(graph.model["name"])
        if graph.model.get("view") in ("latent", "augmented"):
            title += f" ({graph.model['view']} view, {graph.model.get('class', '')} model)"
        attrs += [f"label={_quote(title)}", "labelloc=t", "fontsize=16"]
    lines.append(f"  graph [{', '.join(attrs)}];")
    lines.append('  node [fontname="Helvetica", fontsize=11, margin="0.12,0.04"];')
    lines.append("  edge [arrowsize=0.7];")
    members, children = _clusters(nodes)
    layout = plate_layout(graph) if graph.model.get("plates") else PlateLayout()
    if layout.plates:
        members, children = _with_plates(nodes, members, children, layout)
    boxes = {("plate", plate.id): plate.label for plate in layout.plates}
    lines.extend(_cluster_lines("", members, children, "  ", _Drawing(boxes, layout.notes)))
    kinds: dict[str, None] = {}
    blocks = _unit_blocks(graph)
    for node in nodes:
        for parent in node.parents:
            kind = graph.edge_kind(parent, node.id)
            kinds[kind] = None
            attrs = [EDGE_STYLES[kind]] if EDGE_STYLES.get(kind) else []
            role = "\n".join(
                x for x in (_parameter_of(node, parent), blocks.get((parent, node.id))) if x
            )
            if role:
                attrs.append(f"label={_quote(role)}, fontsize=9")
            style = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f"  {_quote(parent)} -> {_quote(node.id)}{style};")
    used_styles = dict.fromkeys(_node_style(node) for node in nodes)
    lines.extend(_legend(used_styles, kinds, _legend_prefix(nodes)))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _unit_blocks(graph: Graph) -> dict[tuple[str, str], str]:
    """At unit granularity, each edge's dependency pattern in short (``complete bipartite
    784×20``, ``local 5×5 window, stride 1``); diagonal edges need no label."""
    found = {}
    for block in (graph.model.get("units") or {}).get("blocks", []):
        text = str(block.get("pattern", "")).split(" (")[0]
        if text and text != "diagonal":
            found[(block.get("source"), block.get("target"))] = text
    return found


def _parameter_of(node: Node, parent: str) -> str:
    """The distribution parameters ``parent`` feeds (``loc``, ``scale, ...``), if any."""
    if node.kind == DETERMINISTIC:
        return ""
    return ", ".join(k for k, v in node.distribution.params.items() if v == parent)


def write_dot(graph: Graph, path: str | os.PathLike[str], *, protect: Paths = ()) -> None:
    """Write the graph's DOT text to ``path`` atomically (never over the ``protect`` files;
    see :func:`~nn2pgm.backends._files.atomic_write`)."""
    atomic_write(path, to_dot(graph), protect=protect)


def _node_style(node: Node) -> str:
    if node.attrs.get("role") == "auxiliary":
        return AUXILIARY
    if node.kind == DETERMINISTIC:
        return OBSERVED_DETERMINISTIC if node.observed else DETERMINISTIC_STYLE
    return OBSERVED if node.observed else LATENT


def _node_line(node: Node, indent: str, notes: Iterable[str] = ()) -> str:
    if node.kind == DETERMINISTIC:
        text = f"{node.id} = {node.op} {_shape_text(node.shape)}"
    else:
        text = f"{node.id} ~ {node.distribution.family} {_shape_text(node.shape)}"
    label = _html("".join([text, *(f" [{note}]" for note in notes)]))
    params = node.attrs.get("params")
    if isinstance(params, int) and not isinstance(params, bool) and params > 0:
        label += f'<BR/><FONT POINT-SIZE="9">{params:,} params</FONT>'
    return f"{indent}{_quote(node.id)} [label=<{label}>, {_node_style(node)}];"


def _shape_text(shape: tuple) -> str:
    """``[400]``: one sample's shape; for a tuple value, that of its first tensor."""
    while is_tuple_shape(shape):
        shape = shape[0]
    return "[" + ", ".join(str(d) for d in event_shape(shape)) + "]"


# -- module clusters --------------------------------------------------------------------------
def _clusters(nodes: list[Node]) -> tuple[dict[str, list[Node]], dict[str, list[str]]]:
    """The nodes of each cluster and the sub-clusters of each cluster ("" is the top level).

    A node belongs to the module that contains it: a module's own call (``layer1.0.conv1``)
    to its parent module (``layer1.0``), an op called inside a module's ``forward`` (whose
    module path names a module other nodes are inside of) to that module.
    """
    containers: set[str] = set()
    for node in nodes:
        path = _parent(node.module)
        while path and path not in containers:
            containers.add(path)
            path = _parent(path)
    members: dict[str, list[Node]] = {}
    children: dict[str, list[str]] = {"": []}
    for node in nodes:
        home = node.module if node.module in containers else _parent(node.module)
        if home not in children:
            _register(home, children)
        members.setdefault(home, []).append(node)
    return members, children


def _parent(path: str) -> str:
    return path[: max(path.rfind("."), 0)]


def _register(path: str, children: dict[str, list[str]]) -> None:
    """Add ``path`` and its missing ancestors to the cluster tree, in order of first use."""
    chain = [path]
    while (up := _parent(chain[-1])) not in children:
        chain.append(up)
    for sub in reversed(chain):
        children[_parent(sub)].append(sub)
        children[sub] = []


@dataclass
class _Drawing:
    """What a cluster tree is drawn with: the label of each plate box (keyed
    ``("plate", id)``) and the labels of the plates that are not boxes, per node."""

    boxes: dict[Hashable, str]
    notes: dict[str, list[str]]


def _cluster_lines(
    key: Hashable,
    members: dict[Hashable, list[Node]],
    children: dict[Hashable, list[Hashable]],
    indent: str,
    drawing: _Drawing,
) -> Iterator[str]:
    """A cluster's nodes, then its sub-clusters; a module cluster holding a single node or a
    single sub-cluster adds nothing to the picture and is drawn as its content alone."""
    for node in members.get(key, ()):
        yield _node_line(node, indent, drawing.notes.get(node.id, ()))
    for sub in children[key]:
        if sub in drawing.boxes:
            yield f"{indent}subgraph {_quote('cluster_plate:' + sub[1])} {{"
            yield (
                f"{indent}  graph [label={_quote(drawing.boxes[sub])}, style=solid, "
                "color=black, fontcolor=black, fontsize=11, labeljust=r, labelloc=b];"
            )
            yield from _cluster_lines(sub, members, children, indent + "  ", drawing)
            yield f"{indent}}}"
            continue
        if len(members.get(sub, ())) + len(children[sub]) == 1:
            yield from _cluster_lines(sub, members, children, indent, drawing)
            continue
        top = ", labelloc=t" if drawing.boxes else ""  # not the bottom of a plate around it
        yield f"{indent}subgraph {_quote('cluster_module:' + sub)} {{"
        yield (
            f'{indent}  graph [label={_quote(sub)}, style="rounded", color=gray60, '
            f"fontcolor=gray40, fontsize=10, labeljust=l{top}];"
        )
        yield from _cluster_lines(sub, members, children, indent + "  ", drawing)
        yield f"{indent}}}"


# -- plates among the module clusters ---------------------------------------------------------
def _with_plates(
    nodes: list[Node],
    members: dict[str, list[Node]],
    children: dict[str, list[str]],
    layout: PlateLayout,
) -> tuple[dict[Hashable, list[Node]], dict[Hashable, list[Hashable]]]:
    """The cluster tree of the plate boxes and of the module clusters that do not cross a
    plate's border: a module cluster inside a plate that holds all its nodes, a plate inside
    a module cluster that holds all the plate's nodes, a plate around a module cluster over
    the same nodes."""
    sets: dict[str, set[str]] = {}
    for path in reversed(children):  # a module cluster is registered before its sub-clusters
        sets[path] = {node.id for node in members.get(path, ())}
        for sub in children[path]:
            sets[path] |= sets[sub]
    home, sizes = layout.home(), {plate.id: len(plate.nodes) for plate in layout.plates}
    modules = [path for path in children if path and _fits(sets[path], home, sizes, layout)]
    entries: list[tuple[tuple, Hashable, set[str] | tuple[str, ...]]] = [
        ((-len(plate.nodes), 0, k), ("plate", plate.id), plate.nodes)
        for k, plate in enumerate(layout.plates)
    ]
    entries += [((-len(sets[m]), 1, len(m), k), m, sets[m]) for k, m in enumerate(modules)]
    entries.sort(key=lambda entry: entry[0])
    position = {node.id: k for k, node in enumerate(nodes)}
    tree = nest((key, sorted(group, key=position.__getitem__)) for _, key, group in entries)
    first = {key: min(position[n] for n in group) for _, key, group in entries}
    members_of: dict[Hashable, list[Node]] = {}
    for node in nodes:
        members_of.setdefault(tree.home.get(node.id, ""), []).append(node)
    children_of: dict[Hashable, list[Hashable]] = {"": []}
    children_of.update((key, []) for _, key, _ in entries)
    for key in sorted(tree.parent, key=first.__getitem__):
        parent = tree.parent[key]
        children_of["" if parent is None else parent].append(key)
    return members_of, children_of


def _fits(
    group: set[str], home: dict[str, str], sizes: dict[str, int], layout: PlateLayout
) -> bool:
    """True when no plate box crosses the border of a module cluster over ``group``: each
    one that holds some of its nodes (``home``: the innermost box around a node) holds all of
    them or lies inside it (``sizes``: the boxes' node counts)."""
    count: dict[str, int] = {}
    for node_id in group:
        plate = home.get(node_id)
        while plate is not None:
            count[plate] = count.get(plate, 0) + 1
            plate = layout.parent[plate]
    return all(c in (len(group), sizes[plate]) for plate, c in count.items())


# -- legend -----------------------------------------------------------------------------------
def _legend_prefix(nodes: list[Node]) -> str:
    prefix = "legend:"
    while any(node.id.startswith(prefix) for node in nodes):
        prefix = "_" + prefix
    return prefix


def _legend(node_styles: dict[str, None], edge_kinds: dict[str, None], prefix: str) -> list[str]:
    """A cluster with one sample node per node style used and one sample edge per edge kind,
    stacked in a column by invisible edges."""
    lines = [
        "  subgraph cluster_legend {",
        '    graph [label="Legend", style="rounded", color=gray60, fontsize=10, labeljust=l];',
        "    node [fontsize=9, height=0.3];",
    ]
    rows = []
    for style in NODE_LEGEND:
        if style in node_styles:
            row = _quote(f"{prefix}{NODE_LEGEND[style]}")
            lines.append(f"    {row} [label={_quote(NODE_LEGEND[style])}, {style}];")
            rows.append(row)
    ordered = [k for k in EDGE_STYLES if k in edge_kinds]
    ordered += sorted(k for k in edge_kinds if k not in EDGE_STYLES)
    for kind in ordered:
        row, head = _quote(f"{prefix}{kind}:from"), _quote(f"{prefix}{kind}:to")
        text, style = EDGE_LEGEND.get(kind, kind), EDGE_STYLES.get(kind, "")
        lines.append(f'    {row} [label="", shape=point, width=0.06];')
        lines.append(f"    {head} [label={_quote(text)}, shape=plaintext, height=0.2];")
        lines.append(f"    {{rank=same; {row}; {head};}}")
        lines.append(f"    {row} -> {head} [{f'{style}, ' if style else ''}minlen=2];")
        rows.append(row)
    lines.extend(f"    {a} -> {b} [style=invis];" for a, b in pairwise(rows))
    lines.append("  }")
    return lines


# -- quoting ----------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A DOT double-quoted string (ids may hold dots, slashes, quotes, backslashes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _html(text: str) -> str:
    """Text for a Graphviz HTML-like label."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# -- rendering --------------------------------------------------------------------------------
def render(dot_text: str, path: str | os.PathLike[str], *, protect: Paths = ()) -> None:
    """Run Graphviz ``dot`` on ``dot_text`` and write the picture (``.svg`` or ``.png``, by the
    suffix of ``path``) atomically (never over the ``protect`` files)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in RENDER_FORMATS:
        raise UsageError(f"cannot render {os.fspath(path)!r}: use a .svg or .png suffix")
    check_output(path, protect)
    program = shutil.which("dot")
    if program is None:
        raise RenderError(
            "Graphviz 'dot' not found: install Graphviz (apt-get install graphviz) or write "
            ".dot instead"
        )
    done = subprocess.run(
        [program, f"-T{RENDER_FORMATS[suffix]}"],
        input=dot_text.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[0] if lines else f"exit status {done.returncode}"
        raise RenderError(f"Graphviz 'dot' failed: {reason}")
    atomic_write(path, done.stdout, protect=protect)
