"""The dependency rule of every op name the op table knows (``torch.*``, ``family::*``); an
op not named here has no rule and is read through :func:`.rules.fallback` (reported)."""

from __future__ import annotations

import functools

import numpy as np

from ..ops.families import FAMILIES, SAMPLED
from ..ops.torch_ops import FACTORIES
from . import dense, indexing, masking
from . import relations as R
from .patterns import Factor, Pattern, compose
from .rules import (
    Call,
    Conservative,
    Result,
    Rule,
    _axis,
    _normalized,
    _reduced,
    _tensor_args,
    along,
    along_axis,
    batch_norm,
    broadcast,
    elementwise,
    fallback,
    glu,
    group_norm,
    instance_norm,
    movedim,
    nothing,
    nothing_but,
    permute,
    reduction,
    reshape,
    shape_of,
    trailing,
    transpose,
)

ELEMENTWISE = set(
    """abs absolute acos arccos acosh arccosh add addcdiv addcmul angle asin arcsin asinh arcsinh
    atan arctan atan2 arctan2 atanh arctanh bitwise_and bitwise_not bitwise_or bitwise_xor
    bitwise_left_shift bitwise_right_shift ceil clamp clamp_min clamp_max clip copysign cos cosh
    deg2rad digamma div divide eq erf erfc erfinv exp exp2 expm1 float_power floor
    floor_divide fmod frac ge greater greater_equal gt heaviside hypot i0 igamma igammac
    isfinite isinf isnan isneginf isposinf isreal le less less_equal lerp lgamma log log10
    log1p log2 logaddexp logaddexp2 logical_and logical_not logical_or logical_xor logit lt
    maximum minimum fmax fmin mul multiply nan_to_num ne not_equal neg negative nextafter
    polygamma pow positive rad2deg reciprocal remainder round rsqrt sigmoid sign signbit sgn
    sin sinc sinh sqrt square sub subtract tan tanh true_divide trunc fix xlogy where
    masked_fill relu relu6 elu selu celu gelu silu mish leaky_relu hardtanh hardsigmoid
    hardswish hardshrink softshrink tanhshrink softplus softsign logsigmoid threshold prelu
    rrelu dropout alpha_dropout feature_alpha_dropout dropout1d dropout2d dropout3d clone
    contiguous detach to type float double half bfloat16 int long bool short char byte cpu
    real imag conj tril triu bernoulli normal poisson expit erfcx ndtr ndtri log_ndtr
    sigmoid_ silu_ and or xor invert lshift rshift truediv floordiv mod rdiv""".split()
)
SHAPE_ONLY = {"type_as", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"}
SHAPE_ONLY |= {
    f"{base}_like" for base in ("zeros", "ones", "empty", "full", "rand", "randn", "randint")
}
REDUCTIONS = set(
    """sum mean nansum nanmean prod amax amin max min argmax argmin all any std var std_mean
    var_mean logsumexp median nanmedian mode count_nonzero aminmax""".split()
)
RESHAPES = set("view reshape flatten unflatten squeeze unsqueeze ravel view_as reshape_as".split())
DUNDERS = set(
    """add sub mul truediv floordiv mod pow and or xor lshift rshift div lt le gt ge eq ne
    neg pos abs invert""".split()
)


def base_name(fn: str) -> str:
    """``torch.Tensor.add_`` -> ``add``; ``torch.Tensor.__radd__`` -> ``add``."""
    name = fn.rsplit(".", 1)[-1]
    if fn.endswith(".__get__"):
        return fn.rsplit(".", 2)[-2] + ".get"
    if name.startswith("__") and name.endswith("__"):
        core = name[2:-2]
        for prefix in ("", "i", "r"):
            if core.startswith(prefix) and core[len(prefix) :] in DUNDERS | {"matmul"}:
                return ("r" if prefix == "r" and core[1:] == "matmul" else "") + core[len(prefix) :]
        return core
    if name.endswith("_") and not name.startswith("_"):
        return name[:-1]
    return name


def _reversed_matmul(call: Call) -> Result:
    swapped = Call(call.fn, [call.args[1], call.args[0]], {}, call.out, call.semantics)
    return {(p, ("a", 1 - loc[1])): v for (p, loc), v in dense.matmul(swapped).items()}


def _addmm(call: Call) -> Result:
    """``addmm(bias, a, b)``, ``baddbmm``, ``addmv``: the bias broadcast, ``a @ b`` dense."""
    inner = Call(call.fn, [call.args[1], call.args[2]], {}, call.out, call.semantics)
    result = {(p, ("a", loc[1] + 1)): v for (p, loc), v in dense.matmul(inner).items()}
    result[(), ("a", 0)] = broadcast(shape_of(call.out), shape_of(call.args[0]))
    return result


def _norm(call: Call) -> Result:
    """``torch.norm(x, p, dim)``/``linalg.vector_norm(x, ord, dim)``: a reduction over dim."""
    moved = Call(call.fn, [call.args[0], call.arg(2, "dim")], {"keepdim": False}, call.out)
    return reduction(moved)


def _constant_pad(call: Call) -> Result:
    return dense.pad(Call(call.fn, [call.args[0], call.args[1], "constant"], {}, call.out))


def _local_response_norm(call: Call) -> Result:
    x = call.args[0]
    size = int(call.arg(1, "size"))
    c = shape_of(x)[1]
    return {((), ("a", 0)): along(shape_of(x), {1: R.Window(c, c, 1, range(-size, size + 1))})}


def _family(name: str) -> Rule:
    """A draw of ``family::<name>``: each unit reads the parameter units it lines up with; a
    categorical reads its unit's whole last axis of probabilities, a simplex-valued draw
    (Dirichlet, one-hot, relaxed categorical) the whole axis too."""
    events_in = name == "Categorical"
    simplex = name in ("Dirichlet", "OneHotCategorical", "RelaxedCategorical")

    def rule(call: Call) -> Result:
        out = shape_of(call.out)
        result = {}
        for loc, t in _tensor_args(call):
            ts = shape_of(t)
            if events_in and ts:
                p = compose(broadcast(out, ts[:-1]), _reduced(ts[:-1], ts, [len(ts) - 1]))
            elif simplex and ts and out:
                p = compose(broadcast(out, ts), along(ts, {len(ts) - 1: R.Full(ts[-1], ts[-1])}))
            else:
                p = broadcast(out, ts)
            result[(), loc] = p
        return result

    return rule


def _sampled(call: Call) -> Result:
    result = {((), ("a", 0)): Pattern.identity(shape_of(call.args[0]))}
    for loc, t in _tensor_args(call):
        if loc != ("a", 0):
            result[(), loc] = broadcast(shape_of(call.out), shape_of(t))
    return result


def _multinomial(call: Call) -> Result:
    p = call.args[0]
    ps, out = shape_of(p), shape_of(call.out)
    letters = dense.LETTERS[: len(ps) - 1]
    return {((), ("a", 0)): dense.contraction(out, letters + "s", ps, letters + "c")}


def _topk(call: Call) -> Result:
    return along_axis("all", -1, position=2)(call)


def _window_reduce(call: Call) -> Result:
    """``Tensor.unfold(dim, size, step)``: windows along ``dim`` in a new last axis."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    d = _axis(int(call.args[1]), len(xs))
    size, step = int(call.args[2]), int(call.args[3])
    factors = [Factor((a,), (a,), R.Ident(n)) for a, n in enumerate(xs) if a != d]
    m = np.zeros((out[d] * size, xs[d]), bool)
    for w in range(out[d]):
        m[w * size + np.arange(size), w * step + np.arange(size)] = True
    factors.append(Factor((d, len(out) - 1), (d,), R.simplify(R.Explicit(m))))
    return {((), ("a", 0)): Pattern.of(out, xs, factors)}


NAMED: dict[str, Rule] = {
    "masked_fill": masking.masked_fill,
    "linear": dense.linear,
    "matmul": masking.matmul,
    "rmatmul": _reversed_matmul,
    "mm": masking.matmul,
    "bmm": masking.matmul,
    "mv": dense.matmul,
    "dot": dense.matmul,
    "inner": dense.matmul,
    "einsum": dense.einsum,
    "bilinear": dense.bilinear,
    "addmm": _addmm,
    "baddbmm": _addmm,
    "addmv": _addmm,
    "addbmm": fallback,
    "embedding": dense.embedding,
    "one_hot": dense.one_hot,
    "scaled_dot_product_attention": dense.attention,
    "conv1d": dense.convolution(False),
    "conv2d": dense.convolution(False),
    "conv3d": dense.convolution(False),
    "conv_transpose1d": dense.convolution(True),
    "conv_transpose2d": dense.convolution(True),
    "conv_transpose3d": dense.convolution(True),
    **{f"{kind}_pool{k}d": dense.pooling for kind in ("max", "avg", "lp") for k in (1, 2, 3)},
    **{f"max_pool{k}d_with_indices": dense.pooling for k in (1, 2, 3)},
    **{
        f"adaptive_{kind}_pool{k}d": dense.adaptive_pooling
        for kind in ("max", "avg")
        for k in (1, 2, 3)
    },
    **{f"adaptive_max_pool{k}d_with_indices": dense.adaptive_pooling for k in (1, 2, 3)},
    "pad": dense.pad,
    "constant_pad_nd": _constant_pad,
    "interpolate": dense.interpolate,
    "upsample": dense.interpolate,
    "upsample_nearest": dense.interpolate,
    "upsample_bilinear": dense.interpolate,
    "softmax": along_axis("all"),
    "log_softmax": along_axis("all"),
    "softmin": along_axis("all"),
    "gumbel_softmax": along_axis("all"),
    "normalize": along_axis("all", 1, position=2),
    "cumsum": along_axis("prefix"),
    "cumprod": along_axis("prefix"),
    "cummax": along_axis("prefix"),
    "cummin": along_axis("prefix"),
    "logcumsumexp": along_axis("prefix"),
    "sort": along_axis("all"),
    "argsort": along_axis("all"),
    "msort": along_axis("all", 0),
    "topk": _topk,
    "glu": glu,
    "layer_norm": trailing(_normalized),
    "rms_norm": trailing(_normalized),
    "group_norm": group_norm,
    "batch_norm": batch_norm,
    "instance_norm": instance_norm,
    "local_response_norm": _local_response_norm,
    "norm": _norm,
    "vector_norm": _norm,
    "permute": permute,
    "transpose": transpose,
    "swapaxes": transpose,
    "swapdims": transpose,
    "t": transpose,
    "T.get": transpose,
    "mT.get": transpose,
    "movedim": movedim,
    "moveaxis": movedim,
    "getitem": indexing.getitem,
    "setitem": indexing.setitem,
    "select": indexing.select,
    "narrow": indexing.narrow,
    "split": indexing.split,
    "split_with_sizes": indexing.split,
    "chunk": indexing.split,
    "tensor_split": indexing.split,
    "unbind": indexing.split,
    "cat": indexing.cat,
    "concat": indexing.cat,
    "concatenate": indexing.cat,
    "stack": indexing.stack,
    "expand": indexing.expand,
    "expand_as": indexing.expand,
    "broadcast_to": indexing.expand,
    "repeat": indexing.repeat,
    "tile": indexing.repeat,
    "repeat_interleave": indexing.repeat_interleave,
    "flip": indexing.flip,
    "fliplr": indexing.flip,
    "flipud": indexing.flip,
    "roll": indexing.roll,
    "index_select": indexing.index_select,
    "gather": indexing.gather,
    "take_along_dim": indexing.take_along_dim,
    "multinomial": _multinomial,
    "unfold": _window_reduce,
    "real.get": elementwise,
    "imag.get": elementwise,
}


@functools.cache
def rule_for(fn: str) -> Rule | None:
    """The dependency rule of op ``fn``, or None when it has none."""
    if fn == SAMPLED:
        return _sampled
    if fn.startswith("family::"):
        name = fn.removeprefix("family::")
        return _family(name) if name in FAMILIES else None
    if fn.startswith("onnx::"):
        from .onnx_rules import rule_for as onnx_rule

        return onnx_rule(fn)
    if not fn.startswith("torch."):
        return None
    name = base_name(fn)
    if fn == "torch.nn.functional.unfold":
        return None  # im2col: no rule
    if name in NAMED:
        return NAMED[name]
    if name in ("to", "type", "type_as"):  # another tensor gives only its dtype
        return nothing_but(0)
    if name in ELEMENTWISE:
        return elementwise
    if name in REDUCTIONS:
        return reduction
    if name in RESHAPES:  # view_as(other): other gives only a shape
        return reshape
    if name in SHAPE_ONLY or name in FACTORIES:
        return nothing
    return None


def apply(call: Call) -> tuple[Result, bool]:
    """The rule's answer for ``call`` and whether a rule (not the fallback) gave it."""
    rule = rule_for(call.fn)
    if rule is not None:
        try:
            found = rule(call)
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, AttributeError):
            found = None
        if found is not None and not isinstance(found, Conservative):
            return found, True
    found = fallback(call)
    for pattern in found.values():
        pattern.exact = False  # a superset
    return found, False
