"""The command line's parser: ``nn2pgm convert | inspect | check | sample`` and their options."""

from __future__ import annotations

import argparse

from nn2pgm.errors import UsageError

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
    parser.add_argument(
        "--unroll",
        action="store_true",
        help="unroll nn.RNN/LSTM/GRU layers in time, for the example input's steps: per-step "
        "states h_t (and c_t) with h_{t-1} -> h_t and x_t -> h_t, named initial states h_0",
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
        parser.add_argument(
            "--collapse-repeats",
            action="store_true",
            help="draw each run of identical blocks (transformer.h.0 .. h.11) once, in a plate "
            "'× 12' (a graph to look at: the nodes reading the run lose their programs)",
        )


def _unit_options(parser: argparse.ArgumentParser, inspect: bool) -> None:
    parser.add_argument(
        "--granularity",
        choices=["layer", "unit"],
        default="layer",
        help="layer: a node per layer (default); unit: every scalar unit a random variable, "
        "each edge's dependency blocks recorded (JSON), unit plates drawn (DOT)"
        + (", the unit summary printed" if inspect else ""),
    )
    parser.add_argument(
        "--semantics",
        choices=["structural", "weights"],
        default="structural",
        help="structural: a layer's every connection counts, whatever its weight (default); "
        "weights: connections whose weight is exactly zero (pruned) are dropped",
    )
    if inspect:
        parser.add_argument(
            "--depends",
            action="append",
            default=[],
            metavar="OUTPUT:INPUT",
            help="name the pattern of OUTPUT's units on INPUT's units (complete bipartite "
            "20×784, local 5×5 window, diagonal, independent) and the path carrying it "
            "(repeatable)",
        )
    else:
        parser.add_argument(
            "--expand",
            action="store_true",
            help="with --granularity unit, JSON: write every unit edge as a [output unit, "
            "input unit] pair beside the blocks",
        )
        parser.add_argument(
            "--max-edges",
            type=int,
            metavar="N",
            help="--expand: refuse more than N unit edges (default 10,000,000)",
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
    _unit_options(convert, inspect=False)

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
    _unit_options(inspect, inspect=True)

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
