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

SOURCE_HELP = (
    "model.onnx, model.pt2 (a saved torch.export program), path/file.py:Name or "
    "package.module:Name (an nn.Module class built with no arguments, or a function returning "
    "a module)"
)
EPILOG = """examples:
  nn2pgm convert fixtures/vae.py:VAE -o vae.svg
  nn2pgm inspect fixtures/lenet.py:LeNet --depth 1
  nn2pgm check fixtures/resnet.py:ResNet50 --samples 8
  nn2pgm convert mypkg.models:Net --input-shape x=1,3,32,32 --weights net.pt -o net.json
  nn2pgm convert fixtures/vae.py:VAEDecoder --latent z --to pgmpy -o vae_pgmpy
  nn2pgm sample fixtures/vae.py:VAEDecoder --latent z --do z=0 --samples 8 -o s.npz
  nn2pgm sample model.json --evidence x=x.npy --do relu=h.npy -o samples.safetensors

Example inputs come from --input-shape or from the module's own example_inputs() method,
which returns {forward argument name: example} or (args, kwargs), the batch as dimension 0;
an example is a tensor, or a tuple, list or dict of tensors (state=(h0, c0)).
exit codes: 0 ok / check passed, 1 check failed, 2 bad usage or bad input"""


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...[:DTYPE[:<HIGH]]",
        help="example input for forward argument NAME (state.0 for an element of a tuple, "
        "features.ids of a dict), batch first, with its dtype and for integers the range "
        "[0, HIGH): x=1,784, input_ids=2,16:int64:<50257, mask=2,16:bool (repeatable)",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="trained weights: a state_dict saved with torch.save (read with "
        "weights_only=True) or a .safetensors file",
    )
    parser.add_argument("--train", action="store_true", help="trace in training mode")
    parser.add_argument(
        "--batch-dim",
        action="append",
        default=[],
        metavar="NAME=K",
        help="dimension K of input NAME holds the samples (none: the same for every sample); "
        "default dimension 0, or the one found from two runs (repeatable)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "meta"],
        default="cpu",
        help="meta: build the model on the meta device and convert its structure only, "
        "without weights (models too large for memory; convert and inspect)",
    )
    parser.add_argument(
        "--structure-only",
        action="store_true",
        help="ONNX: load without external data and convert ops nn2pgm cannot run (their CPDs "
        "are opaque; check refuses such a graph as unverifiable)",
    )
    parser.add_argument(
        "--max-elements",
        type=int,
        metavar="N",
        help="refuse any tensor of more than N elements, checked before it is made "
        "(default 2**28 = 268435456)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up after SECONDS (exit 2, naming the stage: importing, building, tracing, "
        "checking, ...); default: no limit",
    )


def _depth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depth",
        type=int,
        metavar="N",
        help="group layers by module path: 1 = the model's direct children (default: every "
        "layer and op)",
    )


def _model_options(parser: argparse.ArgumentParser, views: bool) -> None:
    parser.add_argument(
        "--latent",
        action="append",
        default=[],
        metavar="NAME[=FAMILY(PARAMS)]",
        help="input NAME is latent noise with a prior: normal(LOC,SCALE) (the default, "
        "standard normal), uniform(LOW,HIGH), categorical(K) (an index for an integer input, "
        "one-hot for a float one) or bernoulli(P); e.g. code=uniform(-1,1) (repeatable)",
    )
    parser.add_argument(
        "--likelihood",
        action="append",
        default=[],
        metavar="OUTPUT=FAMILY",
        help="give OUTPUT (node id or position) a likelihood: bernoulli, normal[:SCALE] or "
        "categorical; the model becomes prescribed",
    )
    if views:
        parser.add_argument(
            "--view",
            choices=["full", "latent", "augmented"],
            default="full",
            help="full: every layer; latent: only random variables; augmented: inference and "
            "generative parts, implicit outputs, a GAN's discriminator (default: full)",
        )
        parser.add_argument(
            "--discriminator",
            metavar="SOURCE",
            help="a GAN's discriminator, drawn as an auxiliary node with adversarial edges "
            "(with --view augmented); one without example inputs of its own is fed a sample of "
            "the generator's output",
        )


def _max_units_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-units",
        type=int,
        metavar="N",
        help="pgmpy: refuse models of more than N unit variables (default 10,000)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nn2pgm",
        description="Compile a neural network into a probabilistic graphical model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    convert = commands.add_parser(
        "convert",
        help="write the graphical model as JSON, DOT, SVG, PNG or a pgmpy model",
        description="Convert SOURCE into a graphical model; the format comes from OUT's "
        "suffix (.json, .dot, .svg, .png) or --to. --to pgmpy writes the directory OUT with a "
        "standalone model.py (build() returns the pgmpy model), model.json and the weights in "
        "safetensors (BIF and XMLBIF too for finite-domain networks).",
    )
    _source_options(convert)
    _depth_option(convert)
    _model_options(convert, views=True)
    convert.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    convert.add_argument(
        "--to", choices=["json", "dot", "svg", "png", "pgmpy"], help="output format"
    )
    _max_units_option(convert)

    inspect = commands.add_parser(
        "inspect",
        help="print a table of the model's random variables",
        description="Print node, kind, op, shape and parameter count for every random "
        "variable, with totals.",
    )
    _source_options(inspect)
    _depth_option(inspect)
    _model_options(inspect, views=True)
    inspect.add_argument("--json", action="store_true", help="print the table as JSON")

    check = commands.add_parser(
        "check",
        help="prove by sampling that the graph computes what the network computes",
        description="Run the converted graph and the original network on the same random "
        "inputs (right dtype and range) and the same random seed; print per-output max "
        "abs/rel error. Exit 0 pass, 1 fail.",
    )
    _source_options(check)
    _model_options(check, views=False)
    check.add_argument("--samples", type=int, default=100, metavar="N", help="inputs to draw")
    check.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    check.add_argument(
        "--backend",
        choices=["torch", "pgmpy"],
        default="torch",
        help="sample the graph with nn2pgm's executor (torch) or with pgmpy's simulate on its "
        "FunctionalBayesianNetwork (pgmpy); default torch",
    )
    _max_units_option(check)
    for flag, default, metavar, text in (
        ("--alpha", 0.01, "A", "significance level of the distribution tests (0.01)"),
        ("--rtol", 1e-5, "TOL", "largest max-abs error relative to the largest |output| (1e-5)"),
    ):
        check.add_argument(flag, type=float, default=default, metavar=metavar, help=text)
    check.add_argument("--no-exact", action="store_true", help="skip the same-noise part")
    check.add_argument("--power", action="store_true", help="estimate the tests' power (slow)")
    _document_options(convert, check)
    _sample_parser(commands)
    return parser


def _document_options(convert: argparse.ArgumentParser, check: argparse.ArgumentParser) -> None:
    convert.add_argument(
        "--no-weights",
        action="store_true",
        help="json: write the structure only (no OUT's .safetensors beside it; the document "
        "can be inspected, not sampled)",
    )
    check.add_argument(
        "--against",
        metavar="SOURCE",
        help="with a document model.json as SOURCE: the network it was converted from, run as "
        "the reference (--input-shape, --weights and --train apply to it)",
    )


def _sample_parser(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser(
        "sample",
        help="draw ancestral samples of the graph, with inputs given and any node fixed",
        description="Sample the graphical model of SOURCE (or of a document model.json written "
        "by convert, with its weights beside it) by ancestral sampling. --evidence gives an "
        "input, --do fixes any node (an intervention: its parents are cut). VALUE is a number "
        "(filling the node's shape) or a .npy file holding one sample (repeated) or all N. "
        "Observed inputs not given are drawn like check draws them (from a SOURCE's example "
        "inputs; a document refuses them), latent inputs from their prior. Writes every output "
        "(--keep all: every node) to OUT, .npz or .safetensors.",
    )
    _source_options(sample)
    _model_options(sample, views=False)
    sample.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="samples to draw (default: the rows of the arrays given, else 1)",
    )
    sample.add_argument(
        "--evidence",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="the value of input NAME (repeatable)",
    )
    sample.add_argument(
        "--do",
        action="append",
        default=[],
        metavar="NODE=VALUE|FILE.npy",
        help="fix node NODE: a number or a .npy file (repeatable)",
    )
    sample.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    sample.add_argument(
        "--keep",
        choices=["outputs", "all"],
        default="outputs",
        help="write the outputs (default) or every node",
    )
    sample.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="samples file: .npz or .safetensors"
    )


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
            source, train=args.train, latent=args.latent, likelihood=args.likelihood
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
    nn2pgm.write(
        graph, args.output, to=fmt, max_units=args.max_units, protect=protect, weights=weights
    )
    print(f"wrote {args.output} ({fmt}, {len(graph)} nodes)")
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
        if args.json:
            doc = {
                "model": graph.model,
                "nodes": nn2pgm.summary_rows(graph),
                "totals": nn2pgm.summary_totals(graph),
            }
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print(nn2pgm.summary_table(graph))
        return 0
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
        if args.latent or args.likelihood or args.structure_only:
            raise UsageError("--latent, --likelihood and --structure-only apply when converting")
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
