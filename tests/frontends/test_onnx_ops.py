"""The ONNX ops of the op table (``onnx::<OpType>``): entries are found by op type and opset,
and each torch function computes what onnxruntime computes (onnx.reference where onnxruntime
has no kernel): padding modes, strides, dilations, ceil mode, negative indices and steps,
recurrent layers, ..."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from nn2pgm.frontends.onnx.values import attribute_values
from nn2pgm.ops import UnknownOpError, resolve
from nn2pgm.ops import onnx as onnx_ops

RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# (op type, opset, inputs, attributes, number of outputs)
CASES = {
    "conv_same_upper_grouped": (
        "Conv",
        17,
        [f32(2, 4, 7, 6), f32(6, 2, 3, 3), f32(6)],
        {"auto_pad": "SAME_UPPER", "strides": [2, 2], "group": 2},
        1,
    ),
    "conv_asymmetric_pads": (
        "Conv",
        17,
        [f32(1, 3, 6, 6), f32(2, 3, 3, 2)],
        {"pads": [0, 1, 2, 1], "dilations": [1, 2]},
        1,
    ),
    "conv1d_valid": (
        "Conv",
        11,
        [f32(2, 3, 9), f32(4, 3, 3)],
        {"auto_pad": "VALID", "strides": [2]},
        1,
    ),
    "conv_transpose_pads": (
        "ConvTranspose",
        17,
        [f32(1, 4, 5, 5), f32(4, 3, 3, 3), f32(3)],
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1], "dilations": [1, 2]},
        1,
    ),
    "conv_transpose_output_shape": (
        "ConvTranspose",
        17,
        [f32(1, 2, 4, 4), f32(2, 2, 3, 3)],
        {"strides": [2, 2], "output_shape": [9, 8], "auto_pad": "SAME_UPPER"},
        1,
    ),
    "max_pool_ceil_indices": (
        "MaxPool",
        12,
        [f32(2, 3, 7, 7)],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1},
        2,
    ),
    "max_pool_1d_dilated": (
        "MaxPool",
        12,
        [f32(2, 3, 11)],
        {"kernel_shape": [3], "dilations": [2], "pads": [1, 1]},
        1,
    ),
    "max_pool_storage_order": (
        "MaxPool",
        12,
        [f32(1, 2, 4, 5)],
        {"kernel_shape": [2, 2], "storage_order": 1},
        2,
    ),
    "average_pool_exclude_pad": (
        "AveragePool",
        11,
        [f32(2, 3, 6, 6)],
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
        1,
    ),
    "average_pool_include_pad": (
        "AveragePool",
        11,
        [f32(2, 3, 6, 6)],
        {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1], "count_include_pad": 1},
        1,
    ),
    "global_lp_pool": ("GlobalLpPool", 2, [f32(2, 3, 4, 4)], {"p": 3}, 1),
    "pad_reflect": (
        "Pad",
        11,
        [f32(2, 3, 4, 5), i64(0, 0, 1, 2, 0, 0, 2, 1)],
        {"mode": "reflect"},
        1,
    ),
    "pad_edge_opset_2": ("Pad", 2, [f32(3, 4)], {"pads": [1, 2, 0, 1], "mode": "edge"}, 1),
    "pad_constant_axes": (
        "Pad",
        18,
        [f32(2, 3, 4), i64(1, -1, 2, 0), np.array(7.0, np.float32), i64(0, 2)],
        {},
        1,
    ),
    "slice_negative_steps": (
        "Slice",
        13,
        [f32(5, 6, 7), i64(-1, 5), i64(-9999, 1), i64(0, 2), i64(-2, -2)],
        {},
        1,
    ),
    "slice_opset_1": (
        "Slice",
        1,
        [f32(5, 6)],
        {"starts": [1, -4], "ends": [100, -1], "axes": [0, 1]},
        1,
    ),
    "gather_negative_indices": (
        "Gather",
        13,
        [f32(3, 5, 2), np.array([[-1, 0], [2, -5]], np.int64)],
        {"axis": 1},
        1,
    ),
    "gather_elements": (
        "GatherElements",
        13,
        [f32(3, 4), np.array([[0, -1], [2, 1], [3, 3]], np.int64)],
        {"axis": 1},
        1,
    ),
    "gather_nd_batch": (
        "GatherND",
        13,
        [f32(2, 3, 4), np.array([[[1], [0]], [[2], [1]]], np.int64)],
        {"batch_dims": 1},
        1,
    ),
    "scatter_nd_add": (
        "ScatterND",
        16,
        [f32(4, 3), np.array([[1], [3], [1]], np.int64), f32(3, 3)],
        {"reduction": "add"},
        1,
    ),
    "scatter_elements_max": (
        "ScatterElements",
        18,
        [f32(3, 4), np.array([[1, 0], [2, 3], [0, 0]], np.int64), f32(3, 2)],
        {"axis": 1, "reduction": "max"},
        1,
    ),
    "split_num_outputs": ("Split", 18, [f32(7, 2)], {"num_outputs": 3}, 3),
    "split_sizes": ("Split", 13, [f32(2, 6), i64(1, 5)], {"axis": -1}, 2),
    "softmax_opset_11_coerced": ("Softmax", 11, [f32(2, 3, 4)], {"axis": 1}, 1),
    "log_softmax_opset_13": ("LogSoftmax", 13, [f32(2, 3, 4)], {"axis": 1}, 1),
    "hardmax": ("Hardmax", 13, [f32(3, 5)], {}, 1),
    "layer_norm_axis_1": (
        "LayerNormalization",
        17,
        [f32(2, 3, 4), f32(3, 4), f32(3, 4)],
        {"axis": 1},
        3,
    ),
    "instance_norm": ("InstanceNormalization", 6, [f32(2, 3, 5), f32(3), f32(3)], {}, 1),
    "group_norm": ("GroupNormalization", 21, [f32(2, 6, 3), f32(6), f32(6)], {"num_groups": 3}, 1),
    "batch_norm_training": (
        "BatchNormalization",
        15,
        [f32(4, 3, 2), f32(3), f32(3), f32(3), np.abs(f32(3))],
        {"training_mode": 1},
        3,
    ),
    "lrn": ("LRN", 13, [f32(2, 5, 3, 3)], {"size": 3, "alpha": 0.01, "beta": 0.5, "bias": 2.0}, 1),
    "lstm_bidirectional": (
        "LSTM",
        14,
        [
            f32(5, 2, 3),
            f32(2, 16, 3),
            f32(2, 16, 4),
            f32(2, 32),
            np.array([5, 3], np.int32),
            f32(2, 2, 4),
            f32(2, 2, 4),
        ],
        {"hidden_size": 4, "direction": "bidirectional"},
        3,
    ),
    "lstm_peepholes_layout": (
        "LSTM",
        14,
        [
            f32(2, 4, 3),
            f32(1, 8, 3),
            f32(1, 8, 2),
            f32(1, 16),
            np.array([4, 4], np.int32),
            f32(2, 1, 2),
            f32(2, 1, 2),
            f32(1, 6),
        ],
        {"hidden_size": 2, "layout": 1},
        3,
    ),
    "gru_linear_before_reset": (
        "GRU",
        14,
        [f32(4, 2, 3), f32(1, 9, 3), f32(1, 9, 3), f32(1, 18)],
        {"hidden_size": 3, "linear_before_reset": 1},
        2,
    ),
    "gru_reverse": (
        "GRU",
        14,
        [f32(4, 2, 3), f32(1, 6, 3), f32(1, 6, 2)],
        {"hidden_size": 2, "direction": "reverse"},
        2,
    ),
    "rnn_relu": (
        "RNN",
        14,
        [f32(3, 2, 4), f32(1, 5, 4), f32(1, 5, 5)],
        {"hidden_size": 5, "activations": ["Relu"]},
        2,
    ),
    "einsum": ("Einsum", 12, [f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij,bjk->bik"}, 1),
    "cumsum_exclusive_reverse": (
        "CumSum",
        14,
        [f32(3, 4), np.array(1, np.int64)],
        {"exclusive": 1, "reverse": 1},
        1,
    ),
    "one_hot_axis_0": (
        "OneHot",
        11,
        [
            np.array([[0, -1], [2, 1]], np.int64),
            np.array(3, np.int64),
            np.array([0.5, 2.0], np.float32),
        ],
        {"axis": 0},
        1,
    ),
    "top_k_smallest": ("TopK", 11, [f32(3, 6), i64(2)], {"largest": 0, "axis": 1}, 2),
    "depth_to_space_crd": (
        "DepthToSpace",
        13,
        [f32(1, 8, 2, 3)],
        {"blocksize": 2, "mode": "CRD"},
        1,
    ),
    "depth_to_space_dcr": ("DepthToSpace", 13, [f32(1, 8, 2, 3)], {"blocksize": 2}, 1),
    "space_to_depth": ("SpaceToDepth", 13, [f32(1, 2, 4, 6)], {"blocksize": 2}, 1),
    "range_float": (
        "Range",
        11,
        [np.array(1.0, np.float32), np.array(4.5, np.float32), np.array(0.75, np.float32)],
        {},
        1,
    ),
    "trilu_lower": ("Trilu", 14, [f32(4, 5), np.array(1, np.int64)], {"upper": 0}, 1),
    "arg_max_last_index": (
        "ArgMax",
        13,
        [np.array([[1, 3, 3], [2, 2, 0]], np.float32)],
        {"axis": 1, "select_last_index": 1, "keepdims": 0},
        1,
    ),
    "reduce_l2_axes_input": ("ReduceL2", 18, [f32(2, 3, 4), i64(-1, 0)], {"keepdims": 0}, 1),
    "reduce_prod_attrs": ("ReduceProd", 13, [f32(2, 3, 4)], {"axes": [0, 2]}, 1),
    "reduce_sum_noop": ("ReduceSum", 13, [f32(2, 3)], {"noop_with_empty_axes": 1}, 1),
    "reduce_log_sum_exp": ("ReduceLogSumExp", 13, [f32(2, 3, 4)], {"axes": [1]}, 1),
    "expand_bidirectional": ("Expand", 13, [f32(3, 1), i64(2, 1, 4)], {}, 1),
    "clip_min_only": ("Clip", 13, [f32(3, 4), np.array(-0.5, np.float32)], {}, 1),
    "clip_opset_6": ("Clip", 6, [f32(3, 4)], {"min": -0.5, "max": 0.25}, 1),
    "mod_integers": (
        "Mod",
        13,
        [np.array([-7, 7, -3, 5], np.int64), np.array([3, -3, 2, 5], np.int64)],
        {},
        1,
    ),
    "fmod_floats": (
        "Mod",
        13,
        [f32(5), np.array([1.5, -2, 3, 0.5, 1], np.float32)],
        {"fmod": 1},
        1,
    ),
    "div_integers": (
        "Div",
        14,
        [np.array([-7, 7, 9], np.int32), np.array([2, 2, -4], np.int32)],
        {},
        1,
    ),
    "gemm_transposed": (
        "Gemm",
        13,
        [f32(4, 3), f32(5, 4), f32(5)],
        {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
        1,
    ),
    "flatten_axis_0": ("Flatten", 13, [f32(2, 3, 4)], {"axis": 0}, 1),
    "unsqueeze_negative": ("Unsqueeze", 13, [f32(2, 3), i64(-1, 0)], {}, 1),
    "squeeze_opset_11": ("Squeeze", 11, [f32(1, 3, 1)], {"axes": [-1]}, 1),
    "where": ("Where", 16, [np.array([True, False, True]), f32(3), f32(2, 3)], {}, 1),
    "selu": ("Selu", 6, [f32(4, 3)], {"alpha": 1.5}, 1),
    "celu": ("Celu", 12, [f32(4, 3)], {"alpha": 0.7}, 1),
    "gelu_tanh": ("Gelu", 20, [f32(4, 3)], {"approximate": "tanh"}, 1),
    "hard_sigmoid": ("HardSigmoid", 6, [f32(4, 3)], {"alpha": 0.3}, 1),
    "shrink": ("Shrink", 9, [f32(4, 3)], {"lambd": 0.4, "bias": 0.1}, 1),
    "thresholded_relu": ("ThresholdedRelu", 10, [f32(4, 3)], {"alpha": 0.2}, 1),
    "prelu_broadcast": ("PRelu", 16, [f32(2, 3, 4), f32(3, 1)], {}, 1),
    "cast_to_int": ("Cast", 19, [f32(5) * 3], {"to": TensorProto.INT32}, 1),
    "non_zero": ("NonZero", 13, [np.array([[1, 0], [0, 3]], np.float32)], {}, 1),
    "tile": ("Tile", 13, [f32(2, 3), i64(2, 1)], {}, 1),
    "constant_of_shape": (
        "ConstantOfShape",
        9,
        [i64(2, 3)],
        {"value": onnx.numpy_helper.from_array(np.array([4], np.int32))},
        1,
    ),
    "shape_start_end": ("Shape", 15, [f32(2, 3, 4, 5)], {"start": 1, "end": -1}, 1),
    "reshape_zero_copies": ("Reshape", 14, [f32(2, 3, 4), i64(0, -1)], {}, 1),
    "resize_nearest_half_pixel_down": (
        "Resize",
        13,
        [f32(1, 2, 6, 7), np.zeros(0, np.float32), np.array([1, 1, 0.5, 0.6], np.float32)],
        {},
        1,
    ),
    "resize_nearest_asymmetric_floor_up": (
        "Resize",
        13,
        [f32(1, 2, 3, 4), np.zeros(0, np.float32), np.array([1, 1, 3, 2.5], np.float32)],
        {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        1,
    ),
    "resize_linear_half_pixel": (
        "Resize",
        13,
        [f32(1, 2, 4, 5), np.zeros(0, np.float32), np.array([1, 1, 2, 1.5], np.float32)],
        {"mode": "linear"},
        1,
    ),
    "resize_linear_align_corners_sizes": (
        "Resize",
        13,
        [f32(1, 2, 4, 5), np.zeros(0, np.float32), np.zeros(0, np.float32), i64(1, 2, 7, 3)],
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        1,
    ),
    "resize_linear_pytorch_half_pixel_3d": (
        "Resize",
        13,
        [f32(1, 1, 3, 4, 2), np.zeros(0, np.float32), np.array([1, 1, 2, 0.5, 3], np.float32)],
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        1,
    ),
    "upsample_nearest": (
        "Upsample",
        9,
        [f32(1, 2, 3, 3), np.array([1, 1, 2, 3], np.float32)],
        {},
        1,
    ),
    "lp_normalization": ("LpNormalization", 1, [f32(3, 4)], {"p": 1, "axis": 0}, 1),
}


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs, or onnx.reference's where onnxruntime has no kernel."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception:  # noqa: BLE001 - no kernel for this op and opset
        return ReferenceEvaluator(model).run(None, feeds)
    return session.run(None, feeds)


@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_onnxruntime(case):
    op_type, opset, inputs, attributes, outputs = CASES[case]
    names = [f"in{k}" for k in range(len(inputs))]
    results = [f"out{k}" for k in range(outputs)]
    node = helper.make_node(op_type, names, results, **attributes)
    graph = helper.make_graph(
        [node],
        case,
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in zip(names, inputs)
        ],
        [helper.make_value_info(r, onnx.TypeProto()) for r in results],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    want = reference(model, dict(zip(names, inputs)))
    run = resolve(f"onnx::{op_type}")
    kwargs = attribute_values(node)
    got = run(*[torch.from_numpy(v) for v in inputs], opset=opset, outputs=outputs, **kwargs)
    got = got if outputs > 1 else (got,)
    assert len(got) >= outputs
    for have, expected in zip(got, want):
        have = have.numpy()
        assert have.shape == expected.shape
        assert have.dtype == expected.dtype or expected.dtype == np.int32 and op_type == "MaxPool"
        np.testing.assert_allclose(have, expected, rtol=1e-4, atol=1e-5)


def test_entries_are_chosen_by_opset():
    x = torch.zeros(1, 3, 1)
    squeeze = resolve("onnx::Squeeze")
    assert squeeze(x, axes=[0], opset=11).shape == (3, 1)
    assert squeeze(x, torch.tensor([0]), opset=13).shape == (3, 1)
    assert onnx_ops.find("", "Squeeze", 11) != onnx_ops.find("", "Squeeze", 13)
    assert onnx_ops.find("ai.onnx", "Relu", onnx.defs.onnx_opset_version()) is not None
    assert onnx_ops.find("", "Gelu", 19) is None  # Gelu is new in opset 20
    assert onnx_ops.find("", "Loop", 17) is None
    assert onnx_ops.find(onnx_ops.TRAINING_DOMAIN, "Gradient", 1) is not None
    assert resolve("onnx::ai.onnx.preview.training::Gradient") is not None
    with pytest.raises(UnknownOpError, match="onnx::Gelu has no implementation at opset 19"):
        resolve("onnx::Gelu")(x, opset=19)
    with pytest.raises(UnknownOpError, match="'onnx::Loop' is not in nn2pgm's op table"):
        resolve("onnx::Loop")


def test_unsupported_variants_are_named_before_running():
    resize = onnx_ops.find("", "Resize", 13)
    assert (
        resize.unsupported({"mode": "cubic"})
        == "mode 'cubic' is not compiled (nearest and linear are)"
    )
    assert resize.unsupported({"mode": "linear"}) is None
    with pytest.raises(UnknownOpError, match="mode 'cubic' is not compiled"):
        resolve("onnx::Resize")(torch.zeros(1, 1, 2, 2), None, torch.ones(4), mode="cubic")


def test_random_ops_sample_from_torch_and_have_families():
    torch.manual_seed(0)
    normal = resolve("onnx::RandomNormal")
    draws = normal(shape=[4000], mean=1.0, scale=2.0, opset=17)
    assert abs(float(draws.mean()) - 1.0) < 0.1 and abs(float(draws.std()) - 2.0) < 0.1
    torch.manual_seed(0)
    again = normal(shape=[4000], mean=1.0, scale=2.0, opset=17)
    assert torch.equal(draws, again)
    assert set(onnx_ops.RANDOM_FAMILIES.values()) == {
        "Normal",
        "Uniform",
        "Bernoulli",
        "Categorical",
    }
