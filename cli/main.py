"""``nn2pgm convert | inspect | check``.

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

Example inputs come from --input-shape or from the module's own example_inputs() method,
which returns {forward argument name: example tensor} with the batch as dimension 0.
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
        metavar="NAME=D0,D1,...",
        help="example input shape for forward argument NAME, batch first (repeatable)",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="trained weights: a state_dict saved with torch.save (read with "
        "weights_only=True) or a .safetensors file",
    )
    parser.add_argument("--train", action="store_true", help="trace in training mode")
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
        metavar="NAME",
        help="input NAME is latent noise with a standard normal prior (a generator's z)",
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
            "(with --view augmented)",
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
    check.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        metavar="A",
        help="significance level of the distribution test for stochastic graphs (0.01)",
    )
    check.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    check.add_argument(
        "--backend",
        choices=["torch", "pgmpy"],
        default="torch",
        help="sample the graph with nn2pgm's executor (torch) or with pgmpy's simulate on its "
        "FunctionalBayesianNetwork (pgmpy); default torch",
    )
    _max_units_option(check)
    check.add_argument(
        "--rtol",
        type=float,
        default=1e-5,
        metavar="TOL",
        help="largest max-abs error relative to the output's largest magnitude (1e-5)",
    )
    return parser


def _shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    from nn2pgm.frontends.sources import parse_input_shapes

    return parse_input_shapes(args.input_shape) or None


def _convert_options(args: argparse.Namespace) -> dict:
    return {
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
    for spec in (args.source, args.discriminator):
        if spec:
            named.append(spec if spec.endswith((".onnx", ".pt2")) else spec.rpartition(":")[0])
    return [path for path in named if path and os.path.isfile(path)]


def run(args: argparse.Namespace) -> int:
    import nn2pgm

    if getattr(args, "max_units", None) is not None and args.max_units <= 0:
        raise UsageError("--max-units must be positive")
    if args.command == "convert":
        # OUT may not replace a file the conversion reads: checked before the (possibly slow)
        # loading against the files named, after it against every file read, and on writing.
        fmt = nn2pgm.check_output(args.output, to=args.to, protect=_named_files(args))
        source = nn2pgm.load_source(
            args.source,
            input_shapes=_shapes(args),
            weights=args.weights,
            structure_only=args.structure_only,
        )
        critic = nn2pgm.load_source(args.discriminator) if args.discriminator else None
        protect = [*source.files, *(critic.files if critic else ())]
        nn2pgm.check_output(args.output, to=fmt, protect=protect)
        options = {**_convert_options(args), "discriminator": critic}
        graph = nn2pgm.convert(source, **options)
        nn2pgm.write(graph, args.output, to=fmt, max_units=args.max_units, protect=protect)
        print(f"wrote {args.output} ({fmt}, {len(graph)} nodes)")
        return 0
    if args.command == "inspect":
        from nn2pgm import summary

        graph = nn2pgm.convert(args.source, **_convert_options(args))
        for warning in graph.model.get("warnings", []):
            print(f"nn2pgm: warning: {warning}", file=sys.stderr)
        if args.json:
            doc = {
                "model": graph.model,
                "nodes": summary.rows(graph),
                "totals": summary.totals(graph),
            }
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print(summary.table(graph))
        return 0
    if args.samples <= 0:
        raise UsageError("--samples must be positive")
    report = nn2pgm.check(
        args.source,
        input_shapes=_shapes(args),
        weights=args.weights,
        train=args.train,
        latent=args.latent,
        likelihood=args.likelihood,
        samples=args.samples,
        seed=args.seed,
        rtol=args.rtol,
        alpha=args.alpha,
        structure_only=args.structure_only,
        backend=args.backend,
        max_units=args.max_units,
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
        from nn2pgm import limits
        from nn2pgm.guard import deadline

        if args.timeout is not None and not 0 < args.timeout <= 10**7:
            raise UsageError("--timeout must be a positive number of seconds")
        what = f"running nn2pgm {args.command}"
        with limits.limited(args.max_elements), deadline(args.timeout, what):
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
