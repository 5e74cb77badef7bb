"""Composing programs: the calls of several programs as one program (folding a chain of
nodes, or a module's layers, into one node) compute what the programs compute one by one."""

from __future__ import annotations

import pytest
import torch

from nn2pgm.ops.program import ProgramError, compile_program, compose, shape_template, single_call

LINEAR = single_call("torch.nn.functional.linear", [{"$ref": [0]}, {"$t": "w"}, {"$t": "b"}])
RELU = single_call("torch.relu", [{"$ref": [0]}])
ADD = single_call("torch.add", [{"$ref": [0]}, {"$ref": [1]}])
SPLIT = single_call("torch.Tensor.chunk", [{"$ref": [0]}, 2, -1])  # a tuple value
TENSORS = {"w": torch.randn(6, 4), "b": torch.randn(6)}


def run(program, *values, n=1):
    return compile_program(program, TENSORS)(list(values), n)


def test_a_chain_composes_into_one_program_computing_the_same():
    x = torch.randn(3, 4)
    h = run(LINEAR, x)
    halves = run(SPLIT, run(RELU, h))
    want = run(ADD, halves[0], h[:, :3])
    # parts: 1 = linear(x), 2 = relu(1), 3 = chunk(2) (a tuple), 4 = 1[:, :3] (unused)
    head = single_call(
        "torch.Tensor.__getitem__",
        [{"$ref": [0]}, {"$tuple": [{"$slice": [None, None, None]}, {"$slice": [None, 3, None]}]}],
    )
    program = compose(
        [(LINEAR, [0]), (RELU, [1]), (SPLIT, [2]), (head, [1])],
        inputs=1,
        output={"$ref": [3, 0]},  # chunk's first half: an element of a part's tuple value
    )
    # and that program as one part of another: 1 = h, 2 = the program, 3 = h[:, :3], 4 = sum
    added = compose([(LINEAR, [0]), (program, [0]), (head, [1]), (ADD, [2, 3])], 1, {"$ref": [4]})
    assert torch.equal(run(program, x), halves[0])
    assert torch.equal(run(added, x), want)
    assert len(program["calls"]) == 4  # concatenated, not nested


def test_forwarding_parts_and_tuple_outputs_add_no_calls():
    pair = {"calls": [], "output": {"$tuple": [{"$ref": [1]}, {"$ref": [0]}]}}  # swap
    both = single_call("torch.sub", [{"$ref": [0, 0]}, {"$ref": [0, 1]}])  # reads elements
    program = compose([(pair, [0, 1]), (both, [2])], 2, {"$ref": [3]})
    assert [c["fn"] for c in program["calls"]] == ["torch.sub"]
    assert program["calls"][0]["args"] == [{"$ref": [1]}, {"$ref": [0]}]
    a, b = torch.ones(2), torch.full((2,), 5.0)
    assert torch.equal(run(program, a, b), b - a)


def test_negative_refs_are_relative_to_the_part():
    last = {"calls": [{"fn": "torch.exp", "args": [{"$ref": [-1]}], "kwargs": {}}]}
    program = compose([(RELU, [0]), (last, [1])], 1, {"$ref": [2]})
    x = torch.randn(5)
    assert torch.equal(run(program, x), torch.exp(torch.relu(x)))


def test_a_part_may_not_read_a_parent_it_was_not_given():
    draw = single_call("family::Normal", [], {"loc": 0.0, "scale": 1.0, "shape": [2]})
    shape_only = compose([(draw, [None])], 0, {"$ref": [0]})  # randn's x, dropped
    assert run(shape_only).shape == (2,)
    with pytest.raises(ProgramError, match="not given"):
        compose([(RELU, [None])], 0, {"$ref": [0]})
    with pytest.raises(ProgramError, match="not known"):
        compose([(RELU, [1])], 1, {"$ref": [1]})


def test_shape_templates_scale_with_the_samples():
    program = single_call("family::Normal", [], {"shape": shape_template(("N", 3, "2N"))})
    assert run(program, n=4).shape == (4, 3, 8)
