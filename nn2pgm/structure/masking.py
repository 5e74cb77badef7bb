"""Rules that read known units (:mod:`.known`): ``masked_fill`` does not read the units its
mask is known to fill, and a product ``a @ b`` does not read ``b``'s row ``k`` for the outputs
whose ``a[n, k]`` is a known zero (the weights of a causal attention above the diagonal)."""

from __future__ import annotations

import scipy.sparse as sp

from . import dense
from . import relations as R
from .known import Known, allowed
from .patterns import Factor, Pattern
from .rules import Call, Result, elementwise, is_tensor, shape_of


def masked_fill(call: Call) -> Result:
    """Elementwise, but an output unit whose mask is known True reads nothing of ``x``."""
    result = elementwise(call)
    mask = call.known(("a", 1))
    x, out = call.args[0], call.out
    if mask is None or not is_tensor(x) or shape_of(x) != shape_of(out):
        return result
    filled = (mask.mask & mask.value.bool()).broadcast_to(shape_of(out)).reshape(-1)
    if not bool(filled.any()):
        return result
    keep = R.simplify(R.Explicit(sp.diags((~filled).numpy(), format="csr", dtype=bool)))
    axes = tuple(range(len(shape_of(out))))
    result[(), ("a", 0)] = Pattern.of(shape_of(out), shape_of(x), [Factor(axes, axes, keep)])
    return result


def matmul(call: Call) -> Result:
    """``a @ b`` (both at least 2-D): wrt ``b``, output ``[n, m]`` reads ``b[k, m]`` for the
    ``k`` where ``a[n, k]`` is not a known zero in some batch; wrt ``a`` symmetrically."""
    result = dense.matmul(call)
    a, b = call.args[0], call.args[1]
    if not (is_tensor(a) and is_tensor(b)) or a.dim() < 2 or b.dim() < 2:
        return result
    out = shape_of(call.out)
    ka, kb = call.known(("a", 0)), call.known(("a", 1))
    if ka is not None and bool(ka.zeros().any()):
        result[(), ("a", 1)] = _through(result[(), ("a", 1)], ka, out, len(shape_of(b)), False)
    if kb is not None and bool(kb.zeros().any()):
        result[(), ("a", 0)] = _through(result[(), ("a", 0)], kb, out, len(shape_of(a)), True)
    return result


def _through(p: Pattern, other: Known, out: tuple, rank: int, transposed: bool) -> Pattern:
    """``p`` (one term: the output's row axis complete on the operand's contracted axis) with
    that block cut to the pairs the other operand does not know to be zero."""
    if len(p.terms) != 1:
        return p
    free = allowed(other).numpy()  # (n, k) of a, or (k, m) of b
    n_axis, m_axis = len(out) - 2, len(out) - 1
    if transposed:  # wrt a: out m reads a's k where b[k, m] is free
        o_axis, i_axis, rel = m_axis, rank - 1, free.T
    else:  # wrt b: out n reads b's k where a[n, k] is free
        o_axis, i_axis, rel = n_axis, rank - 2, free
    factors = [f for f in p.terms[0] if f.out != (o_axis,) and f.inp != (i_axis,)]
    factors.append(Factor((o_axis,), (i_axis,), R.simplify(R.Explicit(rel))))
    return Pattern.of(p.out_shape, p.in_shape, factors, p.exact)
