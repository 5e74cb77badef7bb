"""``nn2pgm convert | inspect | check | sample``.

Exit codes: 0 success or check passed, 1 a check failed, 2 bad usage or bad input (one line on
stderr naming the problem and the fix; no traceback, no output file left behind).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from nn2pgm.errors import Nn2pgmError, UsageError

from .parser import build_parser


def _shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    import nn2pgm

    return nn2pgm.parse_input_shapes(args.input_shape) or None


def _batch_dims(args: argparse.Namespace) -> dict[str, int | None] | None:
    import nn2pgm

    return nn2pgm.parse_batch_dims(args.batch_dim) or None


def _device(args: argparse.Namespace, command: str) -> Any:
    """Where the model is built: on the meta device for ``--device meta`` (convert, inspect)."""
    import contextlib

    if args.device != "meta":
        return contextlib.nullcontext()
    if command in ("check", "sample"):
        raise UsageError(
            f"--device meta converts the structure only; {command} needs the weights' values: "
            "drop --device meta (or use convert or inspect)"
        )
    import torch

    return torch.device("meta")


def _source(args: argparse.Namespace, command: str) -> Any:
    """The command's SOURCE, loaded as its options say (built on the meta device for
    ``--device meta``, which check and sample refuse)."""
    import nn2pgm

    with _device(args, command):
        return nn2pgm.load_source(
            args.source,
            input_shapes=_shapes(args),
            weights=args.weights,
            structure_only=args.structure_only,
            batch_dims=_batch_dims(args),
        )


def _convert_options(args: argparse.Namespace) -> dict:
    return {
        "batch_dims": _batch_dims(args),
        "input_shapes": _shapes(args),
        "weights": args.weights,
        "train": args.train,
        "depth": args.depth,
        "latent": args.latent,
        "likelihood": args.likelihood,
        "view": args.view,
        "discriminator": args.discriminator,
        "structure_only": args.structure_only,
        "collapse_repeats": args.collapse_repeats,
        "unroll": args.unroll,
    }


def _named_files(args: argparse.Namespace) -> list[str]:
    """The files SOURCE, --weights and --discriminator name (those that exist)."""
    named = [args.weights]
    for spec in (args.source, getattr(args, "discriminator", None)):
        if spec:
            named.append(spec if spec.endswith((".onnx", ".pt2")) else spec.rpartition(":")[0])
    return [path for path in named if path and os.path.isfile(path)]


def _is_document(spec: str) -> bool:
    return spec.lower().endswith(".json")


def _refuse_conversion_options(args: argparse.Namespace, command: str) -> None:
    """A document is converted already: options of the conversion do not apply to it."""
    given = [
        option
        for option, value in (
            ("--input-shape", args.input_shape),
            ("--batch-dim", args.batch_dim),
            ("--device", args.device != "cpu"),
            ("--weights", args.weights),
            ("--train", args.train),
            ("--structure-only", args.structure_only),
            ("--latent", args.latent),
            ("--likelihood", args.likelihood),
            ("--depth", getattr(args, "depth", None) is not None),
            ("--view", getattr(args, "view", "full") != "full"),
            ("--discriminator", getattr(args, "discriminator", None)),
            ("--collapse-repeats", getattr(args, "collapse_repeats", False)),
            ("--unroll", getattr(args, "unroll", False)),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"{given[0]} applies when converting a SOURCE; {args.source} is a document "
            f"already converted (nn2pgm {command} reads it as it is)"
        )


def _assignments(items: list[str], option: str) -> dict[str, float | str]:
    """``NAME=VALUE`` pairs: VALUE a .npy file name or a number."""
    out: dict[str, float | str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            raise UsageError(f"{option} {item!r}: write NAME=VALUE")
        if name in out:
            raise UsageError(f"{option} gives {name!r} twice")
        if value.lower().endswith(".npy"):
            out[name] = value
            continue
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(
                f"{option} {item!r}: VALUE is a number or a .npy file (numpy.save)"
            ) from None
    return out


def _sample(args: argparse.Namespace) -> int:
    """``nn2pgm sample``: OUT is checked before anything is read, against the files named,
    and again, once the source is loaded, against every file it read."""
    import nn2pgm

    if args.samples is not None and args.samples <= 0:
        raise UsageError("--samples must be positive")
    evidence = _assignments(args.evidence, "--evidence")
    do = _assignments(args.do, "--do")
    both = sorted(set(evidence) & set(do))
    if both:
        raise UsageError(f"{both[0]!r} is given by --evidence and by --do: give it once")
    files = [v for v in [*evidence.values(), *do.values()] if isinstance(v, str)]
    document = _is_document(args.source)
    named = [*files, *(nn2pgm.document_files(args.source) if document else _named_files(args))]
    nn2pgm.check_samples_output(args.output, protect=named)
    examples = None
    if document:
        _refuse_conversion_options(args, "sample")
        graph, protect = nn2pgm.load(args.source), named
    else:
        source = _source(args, "sample")
        protect = [*files, *source.files]
        nn2pgm.check_samples_output(args.output, protect=protect)
        examples = source.example_inputs
        graph = nn2pgm.convert(
            source,
            train=args.train,
            latent=args.latent,
            likelihood=args.likelihood,
            unroll=args.unroll,
        )

    def value(v: float | str) -> object:
        return v if isinstance(v, float) else nn2pgm.read_array(v)

    values = nn2pgm.sample_nodes(
        graph,
        evidence={k: value(v) for k, v in evidence.items()},
        do={k: value(v) for k, v in do.items()},
        samples=args.samples,
        seed=args.seed,
        keep=args.keep,
        examples=examples,
    )
    names = nn2pgm.write_samples(values, args.output, protect=protect)
    print(f"wrote {args.output} ({len(names)} arrays)")
    return 0


def _warn(graph: Any) -> None:
    """The graph's warnings (opaque nodes, noise drawn outside torch), one line each."""
    for warning in graph.model.get("warnings", []):
        print(f"nn2pgm: warning: {warning}", file=sys.stderr)


def _critic(args: argparse.Namespace) -> object:
    """The --discriminator's source; one without example inputs is fed, when converting,
    a sample of the generator's output."""
    import nn2pgm

    if not args.discriminator:
        return None
    return nn2pgm.load_source(args.discriminator, inputs_required=False)


def _convert(args: argparse.Namespace) -> int:
    """``nn2pgm convert``: OUT may not replace a file the conversion reads: checked before the
    (possibly slow) loading against the files named, after it against every file read, and on
    writing."""
    import nn2pgm

    weights = not args.no_weights
    named = _named_files(args)
    fmt = nn2pgm.check_output(args.output, to=args.to, protect=named, weights=weights)
    source = _source(args, "convert")
    critic = _critic(args)
    protect = [*source.files, *(critic.files if critic else ())]
    nn2pgm.check_output(args.output, to=fmt, protect=protect, weights=weights)
    options = {**_convert_options(args), "discriminator": critic}
    graph = nn2pgm.convert(source, **options)
    _warn(graph)
    if args.expand and (args.granularity != "unit" or fmt != "json"):
        raise UsageError("--expand writes unit edges into JSON: add --granularity unit, -o X.json")
    if args.granularity == "unit":
        nn2pgm.units(graph, semantics=args.semantics, expand=args.expand, max_edges=args.max_edges)
    elif args.semantics != "structural":
        raise UsageError("--semantics applies with --granularity unit")
    nn2pgm.write(
        graph, args.output, to=fmt, max_units=args.max_units, protect=protect, weights=weights
    )
    print(f"wrote {args.output} ({fmt}, {len(graph)} nodes)")
    return 0


def _inspect(graph: Any, args: argparse.Namespace) -> int:
    """``inspect``'s table, or with ``--granularity unit`` the unit summary, then each
    ``--depends OUTPUT:INPUT``."""
    import nn2pgm

    asked = []
    for text in args.depends:
        output, sep, input_ = text.rpartition(":")
        if not sep or not output or not input_:
            raise UsageError(f"--depends {text!r}: write OUTPUT:INPUT (node ids, see inspect)")
        asked.append((output, input_))
    structure = nn2pgm.unit_structure(graph, args.semantics)
    unit = args.granularity == "unit"
    found = nn2pgm.units(graph, structure=structure) if unit else None
    answers = [structure.depends(o, i) for o, i in asked]
    if args.json:
        doc = {
            "model": graph.model,
            "nodes": nn2pgm.summary_rows(graph),
            "totals": nn2pgm.summary_totals(graph),
        }
        if answers:
            doc["depends"] = [a.as_dict() for a in answers]
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(nn2pgm.summary_table(graph) if found is None else "\n".join(nn2pgm.unit_lines(found)))
    for answer in answers:
        print("\n".join(nn2pgm.depends_lines(answer)))
    return 0


def run(args: argparse.Namespace) -> int:
    import nn2pgm

    if getattr(args, "max_units", None) is not None and args.max_units <= 0:
        raise UsageError("--max-units must be positive")
    if args.command == "convert":
        return _convert(args)
    if args.command == "inspect":
        if _is_document(args.source):  # its structure: the weights are not needed
            _refuse_conversion_options(args, "inspect")
            graph = nn2pgm.load(args.source, weights=False)
        else:
            with _device(args, "inspect"):
                graph = nn2pgm.convert(args.source, **_convert_options(args))
        _warn(graph)
        return _inspect(graph, args)
    if args.command == "sample":
        return _sample(args)
    if args.samples <= 0:
        raise UsageError("--samples must be positive")
    _device(args, "check")
    graph, reference = None, args.source
    if _is_document(args.source):
        if not args.against:
            raise UsageError(
                f"{args.source} is a document, not a network: give the network it came from "
                "with --against SOURCE"
            )
        if args.latent or args.likelihood or args.structure_only or args.unroll:
            raise UsageError(
                "--latent, --likelihood, --structure-only and --unroll apply when converting"
            )
        graph, reference = nn2pgm.load(args.source), args.against
    elif args.against:
        raise UsageError("--against compares a document: nn2pgm check model.json --against SOURCE")
    report = nn2pgm.check(
        reference,
        graph=graph,
        input_shapes=_shapes(args),
        weights=args.weights,
        train=args.train,
        batch_dims=_batch_dims(args),
        latent=args.latent,
        likelihood=args.likelihood,
        unroll=args.unroll,
        samples=args.samples,
        seed=args.seed,
        rtol=args.rtol,
        alpha=args.alpha,
        structure_only=args.structure_only,
        backend=args.backend,
        max_units=args.max_units,
        exact=not args.no_exact,
        power=args.power,
    )
    print("\n".join(report.lines()))
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.version:
            import nn2pgm

            print(f"nn2pgm {nn2pgm.__version__}")
            return 0
        if args.command is None:
            parser.print_help()
            return 2
        import nn2pgm

        if args.timeout is not None and not 0 < args.timeout <= 10**7:
            raise UsageError("--timeout must be a positive number of seconds")
        what = f"running nn2pgm {args.command}"
        # torch is imported before the clock starts: --timeout bounds the model's stages, not
        # the interpreter's start-up (seconds on a loaded machine)
        import torch  # noqa: F401

        with nn2pgm.limited(args.max_elements), nn2pgm.deadline(args.timeout, what):
            return run(args)
    except Nn2pgmError as error:
        print(f"nn2pgm: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nn2pgm: interrupted", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def entry() -> None:
    """The console command: run, flush, and exit without tearing the interpreter down.

    Tearing down torch and a large model's tensors costs more than half a second and does
    nothing for a finished command: every output file is already written and closed.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
