"""ONNX operators have dependency rules of their own: the fixtures exported to ONNX are read
without the conservative rule and with the same unit patterns as the same models converted
from PyTorch, and for small hand-built models of every op family each node's pattern holds
every nonzero of its Jacobian (and, for the ops whose Jacobian is generically dense on their
pattern, equals it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import nn2pgm
from fixtures.export_onnx import FIXTURES, build, export
from nn2pgm.executor import Executor, cpd_function
from nn2pgm.structure.patterns import Pattern
from nn2pgm.structure.programs import leaves

ROWS = 64  # Jacobian rows checked per (node, parent): all of them for smaller outputs
RNG = np.random.default_rng(0)


def weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def model(
    tmp_path: Path,
    nodes: list,
    inputs: dict[str, list[int]],
    outputs: list[str | tuple[str, list[int]]],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> nn2pgm.Graph:
    """Save a one-graph ONNX model (float inputs of fixed shapes; the outputs' types
    inferred unless given as ``(name, float shape)``) and convert it."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    outs = [
        helper.make_tensor_value_info(o[0], TensorProto.FLOAT, o[1])
        if isinstance(o, tuple)
        else helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
        for o in outputs
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "g", ins, outs, initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return nn2pgm.convert(str(path))


def node(op: str, inputs: list[str], outputs: list[str], **attributes) -> onnx.NodeProto:
    """An ONNX node named after its first output (the graph's node id)."""
    return helper.make_node(op, inputs, outputs, name=outputs[0], **attributes)


# -- the autograd oracle ----------------------------------------------------------------------
def _at(value, leaf: tuple):
    for k in leaf:
        value = value[k]
    return value


def _is_float(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def jacobian_rows(fn, x: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    """Which entries of ``d fn(x).flat[rows] / d x`` are nonzero (one backward pass a row)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x).reshape(-1)
    found = np.zeros((len(rows), x.numel()), bool)
    if not out.requires_grad:
        return found
    for r, row in enumerate(rows):
        (grad,) = torch.autograd.grad(out[int(row)], x, retain_graph=True, allow_unused=True)
        if grad is not None:
            found[r] = ((grad != 0) & ~torch.isnan(grad)).reshape(-1).numpy()
    return found


def evaluate(graph: nn2pgm.Graph) -> dict:
    """Every node's value on random inputs (batch dimensions of size 1)."""
    evidence = {}
    for name in graph.inputs:
        node = graph[name]
        shape = tuple(1 if isinstance(d, str) else d for d in node.shape)
        if node.dtype.startswith("float"):
            evidence[name] = torch.randn(shape)
        else:
            evidence[name] = torch.randint(0, 4, shape)
    torch.manual_seed(0)
    return Executor(graph).sample(evidence, keep="all", num_samples=1)


def node_jacobian(f, base: list, k: int, leaf: tuple, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the support of the node's (leaf ``leaf``) Jacobian in parent ``k``."""

    def fn(v: torch.Tensor) -> torch.Tensor:
        args = list(base)
        args[k] = v
        torch.manual_seed(0)
        return _at(f(args, 1), leaf)

    return jacobian_rows(fn, base[k], rows)


def check_jacobians(graph: nn2pgm.Graph, exact: set[str] = frozenset()) -> int:
    """Each node's pattern holds its Jacobian's nonzeros (equals them for ``exact`` nodes);
    the number of (node, output leaf, parent) triples checked."""
    structure = nn2pgm.unit_structure(graph)
    env = evaluate(graph)
    checked = 0
    for node in graph:
        if not node.parents or node.program is None:
            continue
        f = cpd_function(graph, node)
        base = [env[p] for p in node.parents]
        for leaf, _ in leaves(node.shape):
            units = _at(env[node.id], leaf)
            floats = [k for k, v in enumerate(base) if _is_float(v)]
            if not _is_float(units):
                continue
            for k in floats:
                rows = np.arange(units.numel())
                if len(rows) > ROWS:
                    rows = np.sort(RNG.choice(len(rows), ROWS, replace=False))
                jac = node_jacobian(f, base, k, leaf, rows)
                p = structure.node(node.id).patterns[leaf].get((node.parents[k], ()))
                allowed = np.zeros_like(jac) if p is None else p.matrix()[rows].toarray()
                where = f"{node.id}{list(leaf) or ''} <- {node.parents[k]}"
                assert not (jac & ~allowed).any(), f"{where}: a nonzero derivative left out"
                if node.id in exact:
                    assert (allowed == jac).all(), f"{where}: the pattern is not the Jacobian's"
                checked += 1
    return checked


def assert_rules_only(graph: nn2pgm.Graph) -> None:
    assert nn2pgm.unit_structure(graph).fallbacks() == {}


# -- fixtures ---------------------------------------------------------------------------------
FIXTURE_NAMES = [
    "LeNet",
    "VAE",
    "VAEDecoder",
    "DistributionsVAE",
    "MLPClassifier",
    "Generator",
    "Discriminator",
    "BinaryNet",
    "PPCA",
]


def same_pattern(p: Pattern, q: Pattern) -> bool:
    """The same unit pairs (compared factor by factor when the terms line up)."""
    if (p.out_shape, p.in_shape) != (q.out_shape, q.in_shape) or p.nnz() != q.nnz():
        return False
    if len(p.terms) == len(q.terms) == 1:
        a, b = p.terms[0], q.terms[0]
        axes_a, axes_b = [(f.out, f.inp) for f in a], [(f.out, f.inp) for f in b]
        if axes_a == axes_b and all(f.rel == g.rel for f, g in zip(a, b)):
            return True
    return (p.matrix() != q.matrix()).nnz == 0


def compare_with_torch(tmp_path: Path, name: str, every: int = 1) -> int:
    """Every node the ONNX and the torch graphs share by name (and every output, by
    position) depends on the first input as in the torch graph; the number compared."""
    onnx_graph = nn2pgm.convert(str(export(build(name), tmp_path / f"{name}.onnx")))
    torch_graph = nn2pgm.convert(f"fixtures/{FIXTURES[name]}:{name}")
    assert_rules_only(onnx_graph)
    ours, theirs = nn2pgm.unit_structure(onnx_graph), nn2pgm.unit_structure(torch_graph)
    shared = [
        n.id
        for n in onnx_graph
        if n.id in torch_graph and n.op != "input" and n.shape == torch_graph[n.id].shape
    ]
    pairs = list(zip(shared[::every], shared[::every]))
    pairs += list(zip(onnx_graph.outputs, torch_graph.outputs))
    source, target = onnx_graph.inputs[0], torch_graph.inputs[0]
    for a, b in pairs:
        p, q = ours.depends(a, source).pattern, theirs.depends(b, target).pattern
        assert p.exact and same_pattern(p, q), f"{name}: {a} (onnx) and {b} (torch) differ"
    return len(pairs)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_exported_to_onnx_has_the_torch_patterns(tmp_path, name):
    assert compare_with_torch(tmp_path, name) >= 1


def test_resnet50_exported_to_onnx_has_the_torch_patterns(tmp_path):
    assert compare_with_torch(tmp_path, "ResNet50", every=15) > 5


@pytest.mark.parametrize("name", ["LeNet", "Generator", "VAE"])
def test_fixture_exported_to_onnx_holds_its_jacobians(tmp_path, name):
    graph = nn2pgm.convert(str(export(build(name), tmp_path / f"{name}.onnx")))
    conv = {n.id for n in graph if n.op in ("Conv", "ConvTranspose", "Gemm")}
    assert check_jacobians(graph, exact=conv) >= 4


def test_lenet_first_convolution_reads_its_receptive_field(tmp_path):
    graph = nn2pgm.convert(str(export(build("LeNet"), tmp_path / "lenet.onnx")))
    # 6 x 1 channels x (28 rows x 5 taps, padding 2 clipping 2 + 1 taps at each border)^2
    assert nn2pgm.depends(graph, "conv1", "x").pattern.nnz() == 6 * (28 * 5 - 2 * 3) ** 2


# -- hand-built models, one family of ops each ------------------------------------------------
def test_convolutions_and_pooling_follow_onnx_pads_strides_dilations_and_groups(tmp_path):
    x4, x3 = {"x": [1, 4, 7, 8]}, {"v": [1, 3, 9]}
    n = node
    nodes = [
        n(
            "Conv",
            ["x", "w", "b"],
            ["conv"],
            pads=[1, 0, 2, 1],
            strides=[2, 1],
            dilations=[1, 2],
            group=2,
        ),
        n("Conv", ["x", "w2"], ["conv_same"], auto_pad="SAME_LOWER", strides=[2, 2]),
        n("Conv", ["v", "w3"], ["conv1d"], group=3, dilations=[2], pads=[3, 1]),
        n(
            "ConvTranspose",
            ["x", "wt", "bt"],
            ["deconv"],
            strides=[2, 1],
            pads=[1, 0, 0, 1],
            output_padding=[1, 0],
            group=2,
            dilations=[1, 2],
        ),
        n("ConvTranspose", ["x", "wt2"], ["deconv_shape"], strides=[2, 2], output_shape=[15, 16]),
        n(
            "MaxPool",
            ["x"],
            ["maxpool"],
            kernel_shape=[3, 2],
            strides=[2, 1],
            pads=[1, 0, 1, 1],
            dilations=[1, 2],
            ceil_mode=1,
        ),
        n(
            "AveragePool",
            ["x"],
            ["avgpool"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        n("LpPool", ["x"], ["lppool"], kernel_shape=[2, 2], strides=[2, 2]),
        n("GlobalAveragePool", ["x"], ["gap"]),
        n("GlobalMaxPool", ["x"], ["gmp"]),
        n("GlobalLpPool", ["x"], ["glp"]),
    ]
    inits = {
        "w": weights(6, 2, 3, 3),
        "b": weights(6),
        "w2": weights(3, 4, 4, 3),
        "w3": weights(3, 1, 3),
        "wt": weights(4, 3, 3, 2),
        "bt": weights(6),
        "wt2": weights(4, 2, 3, 3),
    }
    outputs = [node.output[0] for node in nodes]
    graph = model(tmp_path, nodes, {**x4, **x3}, outputs, inits)
    assert_rules_only(graph)
    windows = {"conv", "conv_same", "conv1d", "deconv", "deconv_shape", "avgpool", "lppool"}
    windows |= {"gap", "glp"}
    assert check_jacobians(graph, exact=windows) == len(nodes)
    # block-diagonal channels: 3 output channels of a group read its 2 input channels
    conv = nn2pgm.depends(graph, "conv", "x").pattern.dense().reshape(6, 4 * 5, 4, 7 * 8)
    assert (
        conv.any(axis=(1, 3)).tolist()
        == [[True] * 2 + [False] * 2] * 3 + [[False] * 2 + [True] * 2] * 3
    )


def test_products_follow_transposes_and_broadcast_batches(tmp_path):
    n = node
    nodes = [
        n("Gemm", ["a", "k", "c"], ["gemm"], transA=1, alpha=0.5, beta=2.0),
        n("Gemm", ["a", "kt"], ["gemm_t"], transB=1),
        n("MatMul", ["b", "m"], ["matmul"]),
        n("Einsum", ["b", "w"], ["einsum"], equation="bij,jk->bik"),
        n("Einsum", ["a", "w"], ["implicit"], equation="ij,jk"),
        n("Einsum", ["b", "a"], ["ellipsis"], equation="...ij,kj->...ik"),
    ]
    inits = {"k": weights(3, 5), "c": weights(5), "kt": weights(5, 4), "w": weights(4, 6)}
    inputs = {"a": [3, 4], "b": [2, 3, 4], "m": [1, 4, 5]}
    graph = model(tmp_path, nodes, inputs, [node.output[0] for node in nodes], inits)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact={node.output[0] for node in nodes}) == 8
    # transA: output row m reads column m of a, all of it
    gemm = nn2pgm.depends(graph, "gemm", "a").pattern
    assert gemm.nnz() == 4 * 5 * 3


def test_weights_semantics_drops_the_zero_weights_of_gemm_and_matmul(tmp_path):
    w = weights(4, 3)  # Gemm's B with transB: 4 outputs x 3 inputs
    w[0, :2] = w[2, 1] = 0
    m = weights(3, 5)  # MatMul's and Gemm's B: 3 inputs x 5 outputs
    m[:, 0] = m[1, 3] = 0
    nodes = [
        node("Gemm", ["x", "w"], ["gemm_t"], transB=1),
        node("Gemm", ["x", "m"], ["gemm"]),
        node("MatMul", ["x", "m"], ["matmul"]),
    ]
    graph = model(tmp_path, nodes, {"x": [2, 3]}, ["gemm_t", "gemm", "matmul"], {"w": w, "m": m})
    for name, nonzero in (("gemm_t", w != 0), ("gemm", m.T != 0), ("matmul", m.T != 0)):
        pattern = nn2pgm.depends(graph, name, "x", semantics="weights").pattern
        units = pattern.dense().reshape(2, -1, 2, 3)
        assert units[1, :, 1, :].tolist() == nonzero.tolist(), name
        assert not units[1, :, 0, :].any(), name  # rows of the batch stay apart
        assert nn2pgm.depends(graph, name, "x").pattern.nnz() == 2 * nonzero.size, name


def test_elementwise_ops_broadcast_like_numpy(tmp_path):
    n = node
    unary = """Relu Sigmoid Tanh Exp Neg Abs Erf Softplus Floor Ceil Round Sign Sin Softsign
        Identity Reciprocal""".split()
    nodes = [
        n("Add", ["x", "y"], ["add"]),
        n("Mul", ["add", "z"], ["mul"]),
        n("Div", ["add", "y"], ["div"]),
        n("Sub", ["z", "add"], ["sub"]),
        n("Sigmoid", ["add"], ["positive"]),
        n("Pow", ["positive", "y"], ["pow"]),
        n("Log", ["positive"], ["log"]),
        n("Sqrt", ["positive"], ["sqrt"]),
        n("Greater", ["x", "y"], ["greater"]),
        n("Less", ["x", "z"], ["less"]),
        n("Equal", ["x", "y"], ["equal"]),
        n("Not", ["equal"], ["not"]),
        n("And", ["greater", "not"], ["and"]),
        n("Or", ["and", "less"], ["or"]),
        n("Where", ["or", "x", "z"], ["where"]),
        n("Clip", ["add", "low", "high"], ["clip"]),
        n("LeakyRelu", ["add"], ["leaky"], alpha=0.1),
        n("HardSigmoid", ["add"], ["hard"]),
        n("Gelu", ["add"], ["gelu"]),
        n("Elu", ["add"], ["elu"]),
        n("Mod", ["add", "y"], ["mod"], fmod=1),
        n("PRelu", ["add", "slope"], ["prelu"]),
        n("Cast", ["add"], ["cast"], to=TensorProto.DOUBLE),
        n("CastLike", ["add", "y"], ["cast_like"]),
        n("Dropout", ["add"], ["dropout"]),
        n("Min", ["x", "y", "z"], ["min"]),
        n("Max", ["x", "y"], ["max"]),
        n("Mean", ["x", "y", "z"], ["mean"]),
        n("Sum", ["x", "y", "z"], ["sum"]),
        *(n(op, ["add"], [op.lower()]) for op in unary),
    ]
    inits = {"low": np.array(-0.5, np.float32), "high": np.array(0.7, np.float32)}
    inits["slope"] = weights(5)
    inputs = {"x": [2, 1, 5], "y": [3, 5], "z": [5]}
    outputs = [node.output[0] for node in nodes]
    graph = model(tmp_path, nodes, inputs, outputs, inits, opset=20)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact={"add", "mul", "mean", "sum"}) > 40
    # (2, 1, 5) + (3, 5): each of the 30 sums reads one unit of each
    assert nn2pgm.depends(graph, "add", "x").pattern.nnz() == 30
    assert nn2pgm.depends(graph, "add", "y").pattern.nnz() == 30
    assert nn2pgm.depends(graph, "mul", "z").pattern.nnz() == 30


def test_normalizations_and_softmax_read_their_axes(tmp_path):
    n = node
    nodes = [
        n("BatchNormalization", ["x", "s4", "b4", "m4", "v4"], ["batchnorm"]),
        n("LayerNormalization", ["t", "s34", "b34"], ["layernorm"], axis=-2),
        n("InstanceNormalization", ["x", "s4", "b4"], ["instancenorm"]),
        n("GroupNormalization", ["x", "s4", "b4"], ["groupnorm"], num_groups=2),
        n("Softmax", ["t"], ["softmax"], axis=1),
        n("LogSoftmax", ["t"], ["logsoftmax"]),
        n("LRN", ["x"], ["lrn3"], size=3),
        n("LRN", ["x"], ["lrn2"], size=2),
        n("LpNormalization", ["t"], ["lpnorm"], axis=1),
    ]
    inits = {k: weights(4) for k in ("s4", "b4", "m4")}
    inits |= {"v4": np.abs(weights(4)) + 0.5, "s34": weights(3, 4), "b34": weights(3, 4)}
    inputs = {"x": [1, 4, 3, 2], "t": [2, 3, 4]}
    outputs = [node.output[0] for node in nodes]
    shapes = {"groupnorm": ("groupnorm", [1, 4, 3, 2])}  # a function op: not inferred
    graph = model(tmp_path, nodes, inputs, [shapes.get(o, o) for o in outputs], inits, opset=21)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact=set(outputs)) == len(nodes)
    # groups of 2 channels x 3 x 2 positions: 12 units read by 12
    assert nn2pgm.depends(graph, "groupnorm", "x").pattern.nnz() == 2 * 12 * 12


def test_shape_and_indexing_ops_map_units(tmp_path):
    n = node
    nodes = [
        n("Reshape", ["t", "shape"], ["reshape"]),
        n("Flatten", ["t"], ["flatten"], axis=2),
        n("Unsqueeze", ["t", "axes03"], ["unsqueeze"]),
        n("Squeeze", ["unsqueeze", "axes0"], ["squeeze"]),
        n("Transpose", ["t"], ["transpose"], perm=[2, 0, 1]),
        n("Concat", ["t", "c", "t"], ["concat"], axis=1),
        n("Split", ["t"], ["split0", "split1", "split2"], axis=1),
        n("Slice", ["t", "starts", "ends", "axes12", "steps"], ["slice"]),
        n("Gather", ["t", "index"], ["gather"], axis=1),
        n("Gather", ["t", "scalar"], ["gather_scalar"], axis=2),
        n("GatherElements", ["t", "elements"], ["gather_elements"], axis=1),
        n("Expand", ["c", "expand_to"], ["expand"]),
        n("Tile", ["t", "repeats"], ["tile"]),
        n("Pad", ["t", "pads"], ["pad"]),
        n("Pad", ["x", "pads4"], ["reflect"], mode="reflect"),
        n("Pad", ["x", "pads4"], ["edge"], mode="edge"),
        n("DepthToSpace", ["x"], ["dcr"], blocksize=2),
        n("DepthToSpace", ["x"], ["crd"], blocksize=2, mode="CRD"),
        n("SpaceToDepth", ["x"], ["space_to_depth"], blocksize=2),
        n("CumSum", ["t", "two"], ["cumsum"], reverse=1, exclusive=1),
        n("ReduceSum", ["t", "axes02"], ["reducesum"], keepdims=0),
        n("ReduceSum", ["t"], ["noop"], noop_with_empty_axes=1),
        n("ReduceMean", ["t"], ["reducemean"], axes=[1]),
        n("ReduceMax", ["t"], ["reducemax"]),
        n("ReduceL2", ["t"], ["reducel2"], axes=[2]),
        n("ReduceLogSumExp", ["t"], ["logsumexp"], axes=[-1], keepdims=0),
        n("ReduceProd", ["t"], ["reduceprod"], axes=[0]),
        n("ReduceMin", ["t"], ["reducemin"], axes=[1], keepdims=0),
        n("ReduceL1", ["t"], ["reducel1"], axes=[2]),
        n("ReduceSumSquare", ["t"], ["sumsquare"], axes=[0, 1]),
        n("Exp", ["t"], ["exp"]),
        n("ReduceLogSum", ["exp"], ["logsum"], axes=[2]),
        n("ArgMax", ["t"], ["argmax"], axis=1, keepdims=0),
        n("Gather", ["t", "argmax"], ["gather_computed"], axis=1),
        n("GatherND", ["t", "tuples"], ["gather_nd"]),
        n("GatherND", ["t", "rows"], ["gather_nd_batch"], batch_dims=1),
        n("ReduceSum", ["t", "two"], ["row_sums"], keepdims=0),
        n("ArgMax", ["row_sums"], ["best_row"], axis=1),
        n("GatherND", ["t", "best_row"], ["gather_nd_computed"], batch_dims=1),
        n("ScatterElements", ["t", "elements", "c2"], ["scatter"], axis=1),
        n("ScatterND", ["t", "tuples", "c3"], ["scatter_nd"]),
        n("OneHot", ["argmax", "depth", "values"], ["one_hot"]),
        n("Hardmax", ["t"], ["hardmax"], axis=1),
    ]
    inits = {
        "shape": ints(4, 6),
        "axes03": ints(0, 3),
        "axes0": ints(0),
        "starts": ints(-1, 0),
        "ends": ints(-(2**62), 4),
        "axes12": ints(1, 2),
        "steps": ints(-1, 2),
        "index": np.array([[0, 2], [-1, 1]], np.int64),
        "scalar": np.array(3, np.int64),
        "elements": RNG.integers(0, 3, (2, 2, 4)),
        "expand_to": ints(3, 2, 3, 4),
        "repeats": ints(1, 2, 1),
        "pads": ints(0, 1, -1, 0, 2, 1),
        "pads4": ints(0, 0, 1, 2, 0, 0, 2, 1),
        "two": ints(2),
        "axes02": ints(0, 2),
        "tuples": np.array([[1, 2], [0, -1]], np.int64),
        "rows": np.array([[2], [0]], np.int64),
        "depth": ints(5),
        "values": np.array([0.0, 1.0], np.float32),
    }
    inputs = {"t": [2, 3, 4], "c": [2, 1, 4], "x": [1, 4, 4, 6], "c2": [2, 2, 4], "c3": [2, 4]}
    outputs = [o for node in nodes for o in node.output]
    graph = model(tmp_path, nodes, inputs, outputs, inits)
    assert_rules_only(graph)
    dense_on_pattern = {"reducemax", "reducemin", "gather_computed", "gather_nd_computed"}
    maps = set(outputs) - dense_on_pattern - {"scatter", "scatter_nd", "one_hot", "hardmax"}
    assert check_jacobians(graph, exact=maps) > 25
    structure = nn2pgm.unit_structure(graph)
    # indices computed from the input: all of the gathered axis, marked as a superset
    assert not structure.node("gather_computed").exact and structure.node("gather").exact
    assert not structure.node("gather_nd_computed").exact and structure.node("gather_nd").exact
    # t[1, 2, :] and t[0, -1, :]: each of the 8 units copies one
    assert nn2pgm.depends(graph, "gather_nd", "t").pattern.nnz() == 8


def test_resize_reads_the_units_its_coordinates_land_on(tmp_path):
    n = node
    nodes = [
        n("Resize", ["x", "", "scales"], ["nearest"], mode="nearest"),
        n(
            "Resize",
            ["x", "", "", "sizes"],
            ["align"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
        n("Resize", ["x", "", "half"], ["down"], mode="linear"),
        n(
            "Resize",
            ["x", "", "scales"],
            ["asymmetric"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
    ]
    inits = {
        "scales": np.array([1, 1, 2, 1.5], np.float32),
        "sizes": ints(1, 2, 5, 9),
        "half": np.array([1, 1, 0.5, 0.5], np.float32),
    }
    outputs = [node.output[0] for node in nodes]
    graph = model(tmp_path, nodes, {"x": [1, 2, 4, 6]}, outputs, inits)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact={"nearest", "asymmetric"}) == len(nodes)
    # nearest, one input unit per output unit
    assert nn2pgm.depends(graph, "nearest", "x").pattern.nnz() == 2 * 8 * 9


def test_recurrent_layers_read_the_sequence_up_to_each_step(tmp_path):
    n = node
    nodes = [
        n(
            "LSTM",
            ["s", "wl", "rl", "bl", "", "h0", "c0"],
            ["y", "y_h", "y_c"],
            hidden_size=5,
            direction="bidirectional",
        ),
        n("GRU", ["s", "wg", "rg", "bg", "", "g0"], ["gru"], hidden_size=3),
        n(
            "RNN",
            ["s", "wr", "rr", "br", "", "r0"],
            ["rnn", "rnn_h"],
            hidden_size=2,
            direction="reverse",
        ),
    ]
    inits = {"wl": weights(2, 20, 3), "rl": weights(2, 20, 5), "bl": weights(2, 40)}
    inits |= {"wg": weights(1, 9, 3), "rg": weights(1, 9, 3), "bg": weights(1, 18)}
    inits |= {"wr": weights(1, 2, 3), "rr": weights(1, 2, 2), "br": weights(1, 4)}
    inputs = {"s": [4, 2, 3], "h0": [2, 2, 5], "c0": [2, 2, 5], "g0": [1, 2, 3], "r0": [1, 2, 2]}
    outputs = ["y", "y_h", "y_c", "gru", "rnn", "rnn_h"]
    graph = model(tmp_path, nodes, inputs, outputs, inits)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact={n.id for n in graph}) >= 10
    # forward direction: step t reads steps 0..t, reverse: t..3 (y_1 selects the LSTM's Y)
    y = nn2pgm.depends(graph, "y_1", "s").pattern.dense().reshape(4, 2, 2, 5, 4, 2, 3)
    reads = y[:, :, 0, 0, :, 0, 0]
    assert reads[:, 0].tolist() == np.tril(np.ones((4, 4), bool)).tolist()
    assert reads[:, 1].tolist() == np.triu(np.ones((4, 4), bool)).tolist()


def test_shape_only_and_random_values_read_nothing(tmp_path):
    n = node
    nodes = [
        n("Shape", ["x"], ["shape"]),
        n(
            "ConstantOfShape",
            ["shape"],
            ["ones"],
            value=numpy_helper.from_array(np.ones(1, np.float32)),
        ),
        n("Add", ["x", "ones"], ["plus_ones"]),
        n("Size", ["x"], ["size"]),
        n("Cast", ["size"], ["count"], to=TensorProto.FLOAT),
        n("Mul", ["x", "count"], ["times_size"]),
        n("RandomNormalLike", ["x"], ["noise"]),
        n("Add", ["x", "noise"], ["noisy"]),
    ]
    graph = model(tmp_path, nodes, {"x": [2, 3]}, ["plus_ones", "times_size", "noisy"])
    assert_rules_only(graph)
    for output in graph.outputs:
        dep = nn2pgm.depends(graph, output, "x").pattern
        assert dep.exact and dep.each_output_once() and dep.nnz() == 6, output


def test_legacy_opsets_map_their_attributes(tmp_path):
    n = node
    nodes = [
        n("Softmax", ["t"], ["softmax"], axis=1),
        n("Slice", ["t"], ["slice"], starts=[1, -3], ends=[3, 100], axes=[1, 2]),
        n("Pad", ["x"], ["pad"], pads=[0, 0, 1, 0, 0, 0, 2, 1], mode="reflect"),
        n("Upsample", ["x", "scales"], ["upsample"]),
        n("ReduceMean", ["t"], ["mean"], axes=[0, 2]),
        n("Unsqueeze", ["t"], ["unsqueeze"], axes=[1]),
        n("Squeeze", ["unsqueeze"], ["squeeze"], axes=[1]),
    ]
    inits = {"scales": np.array([1, 1, 2, 3], np.float32)}
    outputs = [node.output[0] for node in nodes]
    graph = model(tmp_path, nodes, {"t": [2, 3, 4], "x": [1, 2, 3, 3]}, outputs, inits, opset=9)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact=set(outputs)) == len(nodes)
    # opset 9 softmax: the input seen as 2 x 12, every unit reads its row
    assert nn2pgm.depends(graph, "softmax", "t").pattern.nnz() == 2 * 12 * 12


def test_legacy_broadcast_lines_up_from_the_axis(tmp_path):
    n = node
    nodes = [n("Add", ["t", "b"], ["add"], broadcast=1, axis=1)]
    graph = model(tmp_path, nodes, {"t": [2, 3, 4], "b": [3]}, ["add"], opset=6)
    assert_rules_only(graph)
    assert check_jacobians(graph, exact={"add"}) == 2
    # b[j] is read by the 8 units of row j
    assert nn2pgm.depends(graph, "add", "b").pattern.dense().sum(axis=0).tolist() == [8, 8, 8]


def test_a_computed_axis_falls_back_and_is_reported(tmp_path):
    n = node
    nodes = [
        n("ArgMax", ["u"], ["axis"], axis=0, keepdims=0),
        n("CumSum", ["t", "axis"], ["cumsum"]),
    ]
    graph = model(tmp_path, nodes, {"t": [2, 3], "u": [1]}, ["cumsum"])
    structure = nn2pgm.unit_structure(graph)
    assert list(structure.fallbacks()) == ["onnx::CumSum"]
    assert not structure.node("cumsum").exact
    assert nn2pgm.depends(graph, "cumsum", "t").pattern.nnz() == 6 * 6
