"""The check loop: random inputs, the network and the graph side by side, chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import limits
from ..errors import Nn2pgmError
from ..executor import Executor, cpd_function
from ..guard import user_code
from ..ir import STOCHASTIC, Graph, Node
from ..source import refuse_meta
from . import crn
from .crn import Replay
from .energy import MAX_COORDINATES as WIDE
from .energy import MIN_SAMPLES, MultiTest, grouping, permutations_for, two_sample, varying
from .energy import TESTS as TESTS_PER_NODE
from .noise import fixed_noise, noise_graph, random_nodes
from .reference import flatten_outputs, replays, run_network
from .report import CheckError, CheckReport, OutputReport
from .stats import compare, coordinates, ks_two_sample, not_finite_note, refuse_nan

EMBEDDINGS = {"torch.nn.functional.embedding": (1, "weight", 0), "onnx::Gather": (0, "data", 1)}


# -- random inputs ------------------------------------------------------------------------------
def _table_rows(graph: Graph, node: Node, input_id: str) -> int | None:
    """The rows of the table an embedding lookup in ``node``'s program reads with the input
    ``input_id`` as indices (``F.embedding``'s weight, an ONNX ``Gather`` on a tensor)."""
    if not node.program or input_id not in node.parents:
        return None
    reads = {"$ref": [node.parents.index(input_id)]}
    for call in node.program.get("calls", []):
        rule = EMBEDDINGS.get(call.get("fn"))
        if rule is None:
            continue
        at, name, indices_at = rule
        args, kwargs = call.get("args", []), call.get("kwargs", {})
        table = args[at] if len(args) > at else kwargs.get(name)
        indices = args[indices_at] if len(args) > indices_at else kwargs.get("indices")
        if call["fn"] == "torch.nn.functional.embedding":
            indices = args[0] if args else kwargs.get("input")
        key = table.get("$t") if isinstance(table, dict) else None
        if indices == reads and key in graph.tensors:
            axis = kwargs.get("axis", 0) if call["fn"] == "onnx::Gather" else 0
            return int(graph.tensors[key].shape[axis])
    return None


def input_high(graph: Graph, input_id: str, example: torch.Tensor) -> int:
    """Exclusive upper bound for random integer inputs: the input's range as given
    (``attrs["range"]``), else the smallest embedding table size that reads the input, else
    one more than the example's largest value. A range past a table is refused."""
    sizes = _table_sizes(graph, input_id)
    given = graph[input_id].attrs.get("range") if input_id in graph else None
    if given:
        if sizes and given[1] > min(sizes):
            raise CheckError(
                f"input {input_id!r} has the range <{given[1]} but indexes an embedding table "
                f"of {min(sizes)} rows: give --input-shape {input_id}=...:<{min(sizes)}"
            )
        return int(given[1])
    if sizes:
        return min(sizes)
    return int(example.max()) + 1 if example.numel() else 1


def _table_sizes(graph: Graph, input_id: str) -> list[int]:
    return [
        rows
        for child in graph.children(input_id)
        if (rows := _table_rows(graph, graph[child], input_id)) is not None
    ]


def has_prior(graph: Graph, node: Node) -> bool:
    """``node`` is a latent input drawn from its prior (``--latent NAME[=FAMILY(...)]``)."""
    return node.id in graph.inputs and not node.observed and node.program is not None


def prior_sample(graph: Graph, node: Node, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of a latent input from its prior (its program), seeded by ``generator``;
    a categorical prior of more categories than the embedding table it indexes is refused."""
    probs = node.distribution.params.get("probs")
    sizes = _table_sizes(graph, node.id) if node.distribution.family == "Categorical" else []
    if sizes and isinstance(probs, list) and len(probs) > min(sizes):
        raise CheckError(
            f"input {node.id!r} has the prior categorical({len(probs)}) but indexes an "
            f"embedding table of {min(sizes)} rows: give --latent {node.id}=categorical"
            f"({min(sizes)})"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cpd_function(graph, node)([], n)


def random_inputs(
    graph: Graph, examples: dict[str, torch.Tensor], n: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``n`` random samples per input, shaped like the examples, of the right dtype and range;
    a latent input is drawn from its prior."""
    inputs = {}
    for name, example in examples.items():
        shape = drawn_shape(graph, name, example, n)
        if name in graph and has_prior(graph, graph[name]):
            inputs[name] = prior_sample(graph, graph[name], n, generator)
        elif example.dtype == torch.bool:
            inputs[name] = torch.randint(0, 2, shape, generator=generator).bool()
        elif not example.is_floating_point():
            high = input_high(graph, name, example)
            inputs[name] = torch.randint(0, high, shape, generator=generator, dtype=example.dtype)
        elif example.numel() and example.min() >= 0 and example.max() <= 1:
            inputs[name] = torch.rand(shape, generator=generator, dtype=example.dtype)
        else:
            inputs[name] = torch.randn(shape, generator=generator, dtype=example.dtype)
    return inputs


def drawn_shape(graph: Graph, name: str, example: torch.Tensor, n: int) -> tuple[int, ...]:
    """The shape of ``n`` samples of input ``name``: its node's shape with the symbolic batch
    (``"N"``, ``"kN"``; on any axis, e.g. ``(35, "N")``) at ``n``, else ``n`` rows of the
    example's."""
    shape = graph[name].shape if name in graph else None
    if isinstance(shape, tuple) and len(shape) == example.dim():
        if all(isinstance(d, int) or (isinstance(d, str) and d.endswith("N")) for d in shape):
            return tuple(int(d[:-1] or 1) * n if isinstance(d, str) else d for d in shape)
    return (n, *example.shape[1:])


def sample_axis(graph: Graph, name: str, value: torch.Tensor, n: int) -> int | None:
    """The axis of output ``name``'s value that holds its ``n`` samples (its node's ``"N"``;
    dimension 0 when that has ``n`` rows), or None: the value is one draw."""
    shape = graph[name].shape if name in graph else ()
    if isinstance(shape, tuple) and len(shape) == value.dim() and shape.count("N") == 1:
        axis = shape.index("N")
        if value.shape[axis] == n:
            return axis
    return 0 if value.dim() and value.shape[0] == n else None


# -- the check ----------------------------------------------------------------------------------
def check_graph(
    graph: Graph,
    reference: Callable[..., Any],
    examples: dict[str, torch.Tensor],
    **options: Any,
) -> CheckReport:
    """Compare ``graph`` with the network ``reference`` on ``samples`` random inputs; the graph
    is sampled by the executor, or by ``sampler`` when one is given (an object with the
    executor's ``sample(evidence, do=..., num_samples=...)``, e.g. the pgmpy backend's
    ``Simulator``, run once per test). Options: ``samples`` (100), ``seed`` (0), ``rtol``
    (1e-5), ``alpha`` (0.01), ``chunk`` (16), ``sampler``, ``exact`` (True: run the
    same-noise part; False: only the free-sampling tests)."""
    name = graph.model.get("name") or type(reference).__name__
    if isinstance(reference, torch.nn.Module):
        refuse_meta(reference, name)
    with user_code(f"checking {name}"):
        return _check_graph(graph, reference, examples, **options)


@dataclass
class _Sides:
    """What runs on the graph's side: the sampler of the free test, and for the exact test
    the copy of the graph whose random nodes take the network's noise (see :mod:`.noise`)."""

    graph: Graph
    sampler: Any  # the executor, or a sampler given by the caller (pgmpy)
    external: bool  # given by the caller: the executor only computes the values for do=
    plain: Executor
    noisy: Executor
    roots: dict[str, list[str]]
    capture: bool
    replay: Replay  # the random nodes checked with common random numbers (see :mod:`.crn`)

    @classmethod
    def of(cls, graph: Graph, sampler: Any) -> _Sides:
        noisy, roots = noise_graph(graph)
        plain = Executor(graph)
        return cls(
            graph=graph,
            sampler=plain if sampler is None else sampler,
            external=sampler is not None,
            plain=plain,
            noisy=Executor(noisy) if roots else plain,
            roots=roots,
            capture=bool(random_nodes(graph)),
            replay=Replay.of(graph),
        )

    def exact(self, inputs: dict, captured: list) -> tuple[dict, Callable[[str], str]]:
        """The graph's outputs with its random nodes fixed to the network's draws
        ``captured``, and a function naming where a non-finite value of an output starts."""
        do = fixed_noise(self.graph, self.roots, captured)
        executor = self.noisy if do else self.plain
        if not self.external:
            got = executor.sample(inputs, do=do)
            return got, lambda note: _first_not_finite(executor, inputs, do, note)
        do_nodes = {}
        if do:  # the values of the random nodes themselves, for the sampler's do=
            values = executor.sample(inputs, do=do, keep="all")
            do_nodes = {n.id: values[n.id] for n in random_nodes(self.graph)}
        return self.sampler.sample(inputs, do=do_nodes), lambda note: ""


@dataclass
class _Tally:
    """Errors, and the free draws per output and per latent tested (rows grouped by input:
    ``counts`` rows per input, network then graph), gathered over the runs."""

    graph: Graph
    seed: int
    latents: list[str] = field(default_factory=list)  # random nodes tested in distribution
    worst: dict[str, list[float]] = field(default_factory=dict)
    drawn: dict[str, list[list[torch.Tensor]]] = field(default_factory=dict)  # KS columns
    wide: dict[str, list[list[torch.Tensor]]] = field(default_factory=dict)  # MMD columns
    counts: dict[str, list[int]] = field(default_factory=dict)
    pending: dict[str, list[list[torch.Tensor]]] = field(default_factory=dict)  # this input
    columns: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # coordinates per sample, first run
    notes: dict[str, str] = field(default_factory=dict)  # graph values not finite where due

    def __post_init__(self) -> None:
        self.worst = {o: [0.0, 0.0] for o in self.graph.outputs}

    def add_exact(self, got: dict, where: Callable[[str], str], expected: list) -> None:
        for name, want in zip(self.graph.outputs, expected):
            note = compare(self.worst, name, got[name], want)
            if note and name not in self.notes:
                self.notes[name] = note + where(note)

    def add_free(self, got: dict, expected: list, n: int) -> None:
        for name, want in zip(self.graph.outputs, expected):
            have = got[name]
            refuse_nan(self.graph, name, want, "sampling freely")
            if have.shape == want.shape and name not in self.notes:
                note = not_finite_note(have, want)
                if note:
                    self.notes[name] = note + " sampling freely"
                    continue
            self._rows(name, want, have, n)

    def add_latents(self, got: dict, network: dict, n: int) -> None:
        """The tested latents' values: the graph's own draws ``got``, and the network's
        (its draws through the latent's ``loc + scale * noise``: see :mod:`.noise`)."""
        for name in self.latents:
            have, want = got.get(name), network.get(name)
            if isinstance(have, torch.Tensor) and isinstance(want, torch.Tensor):
                self._rows(name, want, have, n)

    def _rows(self, name: str, want: torch.Tensor, have: torch.Tensor, n: int) -> None:
        axis = sample_axis(self.graph, name, want, n)  # None: no batch, one draw
        rows = 1 if axis is None else n
        if axis:
            want, have = want.movedim(axis, 0), have.movedim(axis, 0)
        size = want.numel() // rows
        if have.shape != want.shape or self.sizes.setdefault(name, size) != size or not size:
            return  # a shape the exact test reports, or no coordinate to test
        if name not in self.columns:
            self.columns[name] = (coordinates(size, self.seed), coordinates(size, self.seed, WIDE))
        want, have = want.reshape(rows, -1), have.reshape(rows, -1)
        buffer = self.pending.setdefault(name, [[], [], [], []])
        for k, cols in enumerate(self.columns[name]):
            buffer[2 * k].append(want[:, cols].double())
            buffer[2 * k + 1].append(have[:, cols].double())

    def end_input(self, keep: int, each: bool = False) -> None:
        """The rows drawn since the last call (at most ``keep``) are one input's (``each``:
        one input per row)."""
        for name, buffer in self.pending.items():
            parts = [torch.cat(b)[:keep] for b in buffer]
            for k, store in enumerate((self.drawn, self.drawn, self.wide, self.wide)):
                store.setdefault(name, [[], []])[k % 2].append(parts[k])
            rows = parts[0].shape[0]
            self.counts.setdefault(name, []).extend([1] * rows if each else [rows])
        self.pending = {}

    def report(self, report: CheckReport) -> CheckReport:
        for name in self.graph.outputs:
            note = self.notes.get(name, "")
            worst = self.worst[name]
            out = OutputReport(name, *worst, passed=worst[1] <= report.rtol and not note)
            out.note = note
            if name in self.drawn:
                a, b = self._pair(self.drawn, name)
                live = varying(a, b, self.counts[name], report.rtol * _magnitude(a))
                statistic, p = ks_two_sample(a[:, live], b[:, live])
                out.ks_statistic = float(statistic.max()) if live.any() else 0.0
                out.ks_p_value = float(p.min()) if live.any() else 1.0
                out.coordinates = a.shape[1]
                report.distribution_samples = a.shape[0]
            report.outputs.append(out)
        report.multi = self._multi_tests(report)
        tests = report.family_tests  # Bonferroni over KS (one test) and the others
        for out in report.outputs:
            if out.ks_p_value is not None and out.ks_p_value * report.tests * tests < report.alpha:
                out.passed = False
        for test in report.multi:
            if test.p_value * tests < report.alpha and test.node in self.graph.outputs:
                next(o for o in report.outputs if o.name == test.node).passed = False
        return report

    @staticmethod
    def _pair(store: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(store[name][0]), torch.cat(store[name][1])

    def _multi_tests(self, report: CheckReport) -> list[MultiTest]:
        """The multivariate tests of every output and tested latent whose samples vary."""
        ready = []
        for name in [*self.graph.outputs, *self.latents]:
            counts = self.counts.get(name, [])
            if name not in self.wide or len(set(counts)) != 1 or sum(counts) < MIN_SAMPLES:
                continue  # inputs of unequal numbers of rows: no permutation within them
            a, b = self._pair(self.wide, name)
            finite = torch.isfinite(a).all(dim=0) & torch.isfinite(b).all(dim=0)
            live = varying(a, b, counts, report.rtol * _magnitude(a)) & finite
            if live.any():  # else deterministic and agreeing: nothing random to compare
                ready.append((name, a[:, live], b[:, live], len(counts)))
        tests = len(TESTS_PER_NODE) * len(ready) + any(
            o.ks_p_value is not None for o in report.outputs
        )
        permutations = permutations_for(tests, report.alpha)
        generator = torch.Generator().manual_seed(self.seed)
        found = []
        for name, a, b, groups in ready:
            kind = "output" if name in self.graph.outputs else "latent"
            for test, statistic, p, ran in two_sample(a, b, groups, permutations, generator):
                found.append(
                    MultiTest(test, name, kind, statistic, p, a.shape[0], groups, a.shape[1], ran)
                )
        return found


def _magnitude(values: torch.Tensor) -> float:
    """The largest finite magnitude in ``values`` (0 if none)."""
    finite = values[torch.isfinite(values)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _chunk(graph: Graph, chunk: int, samples: int, external: bool) -> int:
    """Samples per run: the model's fixed batch, all at once for an external sampler (pgmpy's
    cost is per variable, hardly per sample), else ``chunk`` within the element budget."""
    batch = graph.model.get("batch")
    if isinstance(batch, int):
        if batch < 1:  # runs of no sample would never reach ``samples``
            raise Nn2pgmError(
                f"{graph.model.get('name', 'the model')} fixes its batch size to {batch}: check "
                "compares samples and gets none; give the model a batch of 1 or more"
            )
        chunk = batch
    if external:
        chunk = samples
    shrink = not external and not isinstance(batch, int)
    return _within_budget(graph, min(chunk, samples) if shrink else chunk, shrink)


def _check_graph(
    graph: Graph,
    reference: Callable[..., Any],
    examples: dict[str, torch.Tensor],
    *,
    samples: int = 100,
    seed: int = 0,
    rtol: float = 1e-5,
    alpha: float = 0.01,
    chunk: int = 16,
    sampler: Any = None,
    exact: bool = True,
) -> CheckReport:
    """See :func:`check_graph`."""
    batch = graph.model.get("batch")
    chunk = _chunk(graph, chunk, samples, sampler is not None)
    sides = _Sides.of(graph, sampler)
    generator = torch.Generator().manual_seed(seed)
    priors = [n.id for n in graph if has_prior(graph, n)]  # both sides draw them freely
    latents = [
        n
        for n in graph
        if n.kind == STOCHASTIC and not n.observed and (n.id not in graph.inputs or n.id in priors)
    ]
    report = CheckReport(samples=0, seed=seed, rtol=rtol, alpha=alpha, exact=exact)
    report.latents = [n.id for n in latents]
    report.unmodelled = list(graph.model.get("outside_noise", []))
    tally = _Tally(graph, seed)
    done = step = 0
    while exact and done < samples:
        n = chunk if isinstance(batch, int) else min(chunk, samples - done)
        inputs = random_inputs(graph, examples, n, generator)
        torch.manual_seed(seed + step)
        base = seed + 31 * step
        # with common random numbers, each random call is seeded: one run serves both parts
        seeds = crn.seeds(base) if sides.replay.nodes and replays(reference) else None
        expected, captured = run_network(reference, inputs, sides.capture, seeds)
        _same_outputs(graph, expected)
        for name, want in zip(graph.outputs, expected):
            refuse_nan(graph, name, want, "on random inputs")
        tally.add_exact(*sides.exact(inputs, captured), expected)
        if seeds is not None:
            _tally_crn(report, crn.compare(sides, inputs, expected, captured, base))
        if priors:  # each prior program against the distribution it declares
            errors, skipped = crn.prior_errors(graph, priors, n, base)
            _tally_crn(report, errors)
            sides.replay.skipped.update(skipped)
        done += n
        step += 1
    if latents or not exact:
        free = _Free(graph, reference, examples, sides, tally, generator, priors)
        done = max(done, free.run(samples, chunk))
        report.groups = free.groups
    report.samples = done
    if replays(reference):
        report.crn_skipped = dict(sides.replay.skipped)
    return tally.report(report)


def _same_outputs(graph: Graph, expected: list) -> None:
    if len(expected) != len(graph.outputs):
        raise CheckError(
            f"the network returned {len(expected)} tensors, the graph has "
            f"{len(graph.outputs)} outputs"
        )


@dataclass
class _Free:
    """The free-sampling runs: both sides draw their own noise, at a few inputs with many
    samples each (:func:`.energy.grouping`; the rows of one input next to each other), or at
    one input per row when an input's batch cannot be repeated (a ``"kN"`` dimension)."""

    graph: Graph
    reference: Callable[..., Any]
    examples: dict[str, torch.Tensor]
    sides: _Sides
    tally: _Tally
    generator: torch.Generator
    priors: list[str]
    groups: int = 0

    def run(self, samples: int, chunk: int) -> int:
        """Draw about ``samples`` samples per side; return how many were kept."""
        graph, batch = self.graph, self.graph.model.get("batch")
        observed = {k: v for k, v in self.examples.items() if k not in self.priors}
        repeat = all(_repeat_axis(graph, k, v) is not False for k, v in observed.items())
        self.groups, per = grouping(samples) if repeat else (samples, 1)
        if not self.sides.external and self.sides.capture:
            self.tally.latents = [n.id for n in random_nodes(graph) if n.id not in graph.outputs]
        if not self.sides.external and not isinstance(batch, int):  # an input's rows at once
            chunk = _free_chunk(graph, chunk, per if repeat else samples)
        for _ in range(self.groups if repeat else 1):
            one = self._inputs(1) if repeat else None
            rows, target = 0, per if repeat else samples
            while rows < target:
                n = chunk if isinstance(batch, int) else min(chunk, target - rows)
                inputs = self._inputs(n) if one is None else _repeated(graph, one, observed, n)
                self._once(inputs, n)
                if not repeat:
                    self.tally.end_input(min(n, target - rows), each=True)
                rows += n
            if repeat:
                self.tally.end_input(per)
        return self.groups * per

    def _inputs(self, n: int) -> dict[str, torch.Tensor]:
        drawn = random_inputs(self.graph, self.examples, n, self.generator)
        return {k: v for k, v in drawn.items() if k not in self.priors}

    def _once(self, inputs: dict[str, torch.Tensor], n: int) -> None:
        """One run of both sides on ``inputs`` (``n`` samples), into the tally."""
        graph, sides, tally = self.graph, self.sides, self.tally
        drawn = {k: prior_sample(graph, graph[k], n, self.generator) for k in self.priors}
        network_inputs = {**inputs, **drawn}
        # the two sides' noise: seeds from the check's generator (seed + step would share
        # streams between the checks of neighbouring seeds)
        network_seed, graph_seed = torch.randint(0, 2**62, (2,), generator=self.generator)
        torch.manual_seed(int(network_seed))
        expected, captured = run_network(self.reference, network_inputs, bool(tally.latents))
        _same_outputs(graph, expected)
        torch.manual_seed(int(graph_seed))
        if sides.external:  # pgmpy's root CPDs draw the latent inputs themselves
            inputs = {k: v for k, v in inputs.items() if graph[k].observed}
        if not tally.latents:
            tally.add_free(sides.sampler.sample(inputs, num_samples=n), expected, n)
            return
        values = sides.plain.sample(inputs, num_samples=n, keep="all")
        tally.add_free({o: values[o] for o in graph.outputs}, expected, n)
        do = fixed_noise(graph, sides.roots, captured)
        if do:  # the network's latents: its draws through the latents' own computation
            tally.add_latents(values, sides.noisy.sample(network_inputs, do=do, keep="all"), n)


def _free_chunk(graph: Graph, chunk: int, want: int) -> int:
    """Samples per free run: up to ``want`` at once while the values of all nodes (the free
    run keeps them all for its latents) fit in a quarter of the element budget, ``chunk`` at
    least, within the budget per node."""
    n = want
    while n > chunk and sum(_largest(graph, n, each=True)) > limits.max_elements() // 4:
        n //= 2
    return _within_budget(graph, max(n, min(chunk, want)), shrink=True)


def _repeat_axis(graph: Graph, name: str, example: torch.Tensor) -> int | None | bool:
    """The axis along which input ``name`` holds its samples when that can be repeated (one
    sample there at one sample), None when it has none (one value for all samples), False
    when it cannot be repeated (``"kN"``: several rows per sample)."""
    one, two = drawn_shape(graph, name, example, 1), drawn_shape(graph, name, example, 2)
    axes = [i for i, (p, q) in enumerate(zip(one, two)) if p != q]
    if not axes:
        return None
    return axes[0] if len(axes) == 1 and one[axes[0]] == 1 else False


def _repeated(graph: Graph, one: dict, examples: dict, n: int) -> dict[str, torch.Tensor]:
    """The inputs ``one`` (one sample each) repeated to ``n`` samples."""
    out = {}
    for name, value in one.items():
        axis = _repeat_axis(graph, name, examples[name])
        if axis is None:
            out[name] = value
        else:
            out[name] = value.repeat(*[n if d == axis else 1 for d in range(value.dim())])
    return out


def _tally_crn(report: CheckReport, errors: dict[str, float]) -> None:
    for name, error in errors.items():
        report.crn[name] = max(report.crn.get(name, 0.0), error)


def _first_not_finite(executor: Executor, inputs: dict, do: dict, note: str) -> str:
    """``"; first at node X"``: the first node (in order) whose graph value holds the kind of
    value ``note`` names (NaN, else an infinity) while none of its parents' values do: where
    the graph's values stop being finite, found by running the graph again."""
    nan = "NaN" in note
    values = executor.sample(inputs, do=do, keep="all")

    def bad(value: Any) -> bool:
        for t in flatten_outputs(value):
            if t.is_floating_point() or t.is_complex():
                if bool((torch.isnan(t) if nan else torch.isinf(t)).any()):
                    return True
        return False

    for node in executor.order:
        if node.id in do or node.id in inputs:
            continue
        if bad(values.get(node.id)) and not any(bad(values.get(p)) for p in node.parents):
            return f"; first at node {node.id!r} ({node.op})"
    return ""


# -- the element budget -------------------------------------------------------------------------
def _within_budget(graph: Graph, n: int, shrink: bool) -> int:
    """The number of samples to run at once: ``n``, halved (when ``shrink``) while a node's
    value would hold more elements than the budget allows; a node over the budget even then
    is refused before the network or the graph runs."""
    node, count = _largest(graph, n)
    while shrink and n > 1 and count > limits.max_elements():
        n = max(1, n // 2)
        node, count = _largest(graph, n)
    if node is not None:
        limits.check_elements(f"node {node.id!r} ({node.op}) at {n} samples at once", count)
    return n


def _largest(graph: Graph, n: int, each: bool = False) -> Any:
    """The node whose value holds the most elements at ``n`` samples, and that number
    (``each``: the numbers of all nodes)."""
    best, most, counts = None, -1, []
    for node in graph:
        shapes = node.shape if node.shape and isinstance(node.shape[0], tuple) else (node.shape,)
        count = sum(_elements_at(shape, n) for shape in shapes)
        counts.append(count)
        if count > most:
            best, most = node, count
    return counts if each else (best, most)


def _elements_at(shape: Any, n: int) -> int:
    """Elements of an IR shape at ``n`` samples (``"kN"`` dims are ``k * n``; unknown: 0)."""
    count = 1
    for d in shape if isinstance(shape, tuple) else ():
        if isinstance(d, int):
            count *= max(d, 0)
        elif isinstance(d, str) and (d == "N" or (d.endswith("N") and d[:-1].isdigit())):
            count *= int(d[:-1] or 1) * n
        else:
            return 0
    return count
