"""`circuitatlas query units | adjacency | paths | common | similar | circuit`: the query helpers
of :mod:`circuitatlas.queries.connectivity` with unit criteria as options, printed as a table,
``--json``, or written with ``--csv FILE``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import click
import networkx as nx

from circuitatlas.cli.context import CliContext, ProjectErrors
from circuitatlas.cli.output import echo_json, echo_table, write_csv
from circuitatlas.cli.ranges import COUNT, FRACTION, NON_NEGATIVE, SECONDS
from circuitatlas.queries.connectivity import DEFAULT_LIMIT, DEFAULT_TIMEOUT, Truncated
from circuitatlas.queries.criteria import Units

KINDS = click.Choice(["direct", "expanded"])
KINDS_AUTO = click.Choice(["auto", "direct", "expanded"])
SIGNS = click.Choice(["+", "-"])

# criteria field -> (option name, help); the same options for every side, prefixed per side
_CRITERIA = (
    ("layers", "layers", "Layers, comma-separated; * and ? are wildcards (inception3b.branch*)."),
    ("channels", "channels", "Channels: 0,4-7."),
    ("kind", "layer-kind", "Layer kinds: input, conv, linear, block."),
    ("branch", "branch", "Branches (the neuron's branch property), comma-separated."),
    ("cluster", "cluster", "Cluster uids the unit belongs to, comma-separated."),
    ("motif", "motif", "Motif kinds or Motif uids the unit belongs to, comma-separated."),
    ("role", "role", "Its role in that motif (upstream, mirror, case...), comma-separated."),
    ("orientation", "orientation", "Preferred orientation range lo:hi in degrees, counter-clockwise (330:30)."),
    ("min_selectivity", "min-selectivity", "Lowest orientation selectivity."),
    ("annotated", "annotated", "Neuron properties that must be present (featurevis,examples)."),
)


def criteria_options(prefix: str = "", side: str = "") -> Callable[[Callable], Callable]:
    """The unit criteria as options (``--layers`` ... or ``--from-layers`` ... for ``prefix="from-"``)
    plus repeatable ``--uid``, passed on as keyword arguments named after the options."""
    def decorate(command: Callable) -> Callable:
        key = prefix.replace("-", "_")
        options = [click.option(f"--{prefix}uid", f"{key}uids", multiple=True,
                                help=f"{side}Explicit neuron uid (repeatable).")]
        for name, flag, text in reversed(_CRITERIA):
            kind = FRACTION if name == "min_selectivity" else str
            options.append(click.option(f"--{prefix}{flag}", key + flag.replace("-", "_"), type=kind, help=side + text))
        for option in options:
            command = option(command)
        return command
    return decorate


def _units(model: str | None, options: dict[str, Any], prefix: str = "") -> Units:
    fields = {name: options.pop(prefix + flag.replace("-", "_")) for name, flag, _ in _CRITERIA}
    return Units.from_options(model=model, uids=options.pop(f"{prefix}uids") or None, **fields)


def common_options(command: Callable) -> Callable:
    for option in reversed((
        click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=COUNT, help="Most rows to return."),
        click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True, type=SECONDS,
                     help="Seconds for the whole query."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the rows to this CSV file instead of printing them."),
    )):
        command = option(command)
    return command


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a helper, turning its Truncated warning into a note on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Truncated)
        result = function(*args, **kwargs)
    for warning in caught:
        if issubclass(warning.category, Truncated):
            click.echo(f"note: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return result


def _emit(rows: list[dict[str, Any]], as_json: bool, csv_file: Path | None, data: Any = None) -> None:
    if csv_file is not None:
        write_csv(rows, csv_file)
        click.echo(f"{len(rows)} row(s) written to {csv_file}", err=True)
    elif as_json:
        echo_json(rows if data is None else data)
    else:
        echo_table(rows)


@click.group(cls=ProjectErrors)
def query() -> None:
    """Query the graph without Cypher: units, adjacency, paths, common partners, similar units, circuits."""


@query.command("units")
@click.option("--model", "-m", help="Model id (needed unless --uid is given).")
@criteria_options()
@common_options
@click.pass_obj
def units_cmd(obj: CliContext, model: str | None, limit: int, timeout: float, as_json: bool, csv_file: Path | None,
              **options: Any) -> None:
    """Neurons that meet the criteria."""
    rows = _call(obj.atlas.units, _units(model, options), limit=limit, timeout=timeout)
    _emit(rows, as_json, csv_file)


@query.command("adjacency")
@click.option("--model", "-m", help="Model id (for both sides).")
@criteria_options("from-", "Sources: ")
@criteria_options("to-", "Targets: ")
@click.option("--kind", type=KINDS, default="direct", show_default=True)
@click.option("--min-rel", default=0.0, show_default=True, type=FRACTION,
              help="Keep edges with |rel_in| at least this.")
@click.option("--min-abs", default=0.0, show_default=True, type=NON_NEGATIVE,
              help="Keep edges with |sum| at least this.")
@click.option("--sign", type=SIGNS, help="Only excitatory (+) or inhibitory (-) edges.")
@click.option("--kernels", is_flag=True, help="Add each edge's kernel.")
@common_options
@click.pass_obj
def adjacency_cmd(obj: CliContext, model: str | None, kind: str, min_rel: float, min_abs: float, sign: str | None,
                  kernels: bool, limit: int, timeout: float, as_json: bool, csv_file: Path | None,
                  **options: Any) -> None:
    """Edges between two sets of units: source units, target units and edges (sum, l2, rel_in,
    rel_out). --csv FILE writes the edges there and the units beside it (FILE.sources.csv,
    FILE.targets.csv)."""
    sources, targets = _units(model, options, "from_"), _units(model, options, "to_")
    found = _call(obj.atlas.adjacency, sources, targets, kind, min_rel=min_rel, min_abs=min_abs, sign=sign,
                  kernels=kernels, limit=limit, timeout=timeout)
    edges = [{**e, "kernel": e["kernel"].tolist()} if kernels else e for e in found.edges]
    if csv_file is not None:
        for rows, path in ((found.sources, csv_file.with_suffix(".sources.csv")),
                           (found.targets, csv_file.with_suffix(".targets.csv"))):
            write_csv(rows, path)
    if as_json and csv_file is None:
        echo_json({"sources": found.sources, "targets": found.targets, "edges": edges})
        return
    if csv_file is None:
        click.echo(f"{len(found.sources)} source unit(s), {len(found.targets)} target unit(s), {len(edges)} edge(s)")
    _emit(edges, False, csv_file)


@query.command("paths")
@click.argument("source")
@click.argument("target")
@click.option("--max-len", default=3, show_default=True, type=COUNT, help="Most edges in a path.")
@click.option("--min-len", default=1, show_default=True, type=COUNT, help="Fewest edges in a path.")
@click.option("-k", "k", default=10, show_default=True, type=COUNT, help="How many paths.")
@click.option("--kind", type=KINDS_AUTO, default="auto", show_default=True)
@click.option("--weight", type=click.Choice(["product", "sum"]), default="product", show_default=True,
              help="Path strength: product of signed rel_in, or sum of |rel_in|.")
@click.option("--min-rel", default=0.0, show_default=True, type=FRACTION,
              help="Leave out edges with |rel_in| below this.")
@click.option("--limit", default=200_000, show_default=True, type=COUNT, help="Most edges to read.")
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True, type=SECONDS,
              help="Seconds for the whole query.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows to this CSV file.")
@click.pass_obj
def paths_cmd(obj: CliContext, source: str, target: str, max_len: int, min_len: int, k: int, kind: str, weight: str,
              min_rel: float, limit: int, timeout: float, as_json: bool, csv_file: Path | None) -> None:
    """The k strongest paths from SOURCE to TARGET (neuron uids)."""
    rows = obj.atlas.paths(source, target, max_len, k, kind=kind, weight=weight, min_len=min_len, min_rel=min_rel,
                           limit=limit, timeout=timeout)
    if as_json or csv_file is not None:
        _emit(rows, as_json, csv_file)
        return
    echo_table([{"strength": round(r["strength"], 4), "length": r["length"], "path": " -> ".join(r["units"]),
                 "rel_in": [round(x, 3) for x in r["rel_in"]]} for r in rows])


@query.command("common")
@click.option("--model", "-m", help="Model id (needed unless --uid is given).")
@criteria_options()
@click.option("--side", type=click.Choice(["inputs", "outputs"]), default="inputs", show_default=True)
@click.option("--kind", type=KINDS, default="direct", show_default=True)
@click.option("--min-rel", default=0.0, show_default=True, type=FRACTION,
              help="Each edge at least this fraction of the unit's strongest input (output).")
@click.option("--min-shared", type=COUNT, help="Partners of at least this many of the units (default: all).")
@click.option("--sign", type=SIGNS, help="Only excitatory (+) or inhibitory (-) edges.")
@common_options
@click.pass_obj
def common_cmd(obj: CliContext, model: str | None, side: str, kind: str, min_rel: float, min_shared: int | None,
               sign: str | None, limit: int, timeout: float, as_json: bool, csv_file: Path | None,
               **options: Any) -> None:
    """Common inputs (or outputs) of the units that meet the criteria."""
    helper = obj.atlas.common_inputs if side == "inputs" else obj.atlas.common_outputs
    rows = _call(helper, _units(model, options), min_rel, kind=kind, sign=sign, min_shared=min_shared, limit=limit,
                 timeout=timeout)
    _emit(rows, as_json, csv_file)


@query.command("similar")
@click.argument("unit")
@click.option("--by", type=click.Choice(["inputs", "outputs", "kernels"]), default="inputs", show_default=True)
@click.option("-k", "k", default=10, show_default=True, type=COUNT, help="How many units.")
@click.option("--kind", type=KINDS_AUTO, default="auto", show_default=True)
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True, type=SECONDS,
              help="Seconds for the whole query.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows to this CSV file.")
@click.pass_obj
def similar_cmd(obj: CliContext, unit: str, by: str, k: int, kind: str, timeout: float, as_json: bool,
                csv_file: Path | None) -> None:
    """Units of UNIT's layer with the most similar weight profile (cosine)."""
    _emit(obj.atlas.similar_units(unit, by, k, kind=kind, timeout=timeout), as_json, csv_file)


@query.command("circuit")
@click.argument("target")
@click.option("--depth", default=2, show_default=True, type=COUNT, help="Steps back from the target.")
@click.option("--min-rel", default=0.3, show_default=True, type=FRACTION,
              help="Inputs at least this fraction of each unit's strongest.")
@click.option("--kind", type=KINDS_AUTO, default="auto", show_default=True)
@click.option("--sign", type=SIGNS, help="Only excitatory (+) or inhibitory (-) inputs.")
@click.option("--no-kernels", is_flag=True, help="Leave the kernels out (much less to move).")
@common_options
@click.pass_obj
def circuit_cmd(obj: CliContext, target: str, depth: int, min_rel: float, kind: str, sign: str | None,
                no_kernels: bool, limit: int, timeout: float, as_json: bool, csv_file: Path | None) -> None:
    """The upstream circuit of TARGET: its edges (table, --csv), or nodes and edges with kernels (--json)."""
    g: nx.DiGraph = _call(obj.atlas.circuit, target, depth, min_rel, kind=kind, sign=sign, kernels=not no_kernels,
                          limit=limit, timeout=timeout)
    edges = [{"source": a, "target": b, "depth": g.nodes[a]["depth"], "sum": d["sum"], "rel_in": d["rel_in"],
              **({"kernel": d["kernel"].tolist()} if "kernel" in d else {})} for a, b, d in g.edges(data=True)]
    if as_json and csv_file is None:
        echo_json({"target": target, "kind": g.graph["kind"], "nodes": [{"uid": n, **d} for n, d in g.nodes(data=True)],
                   "edges": edges})
        return
    if csv_file is None:
        click.echo(f"{g.number_of_nodes()} unit(s), {g.number_of_edges()} edge(s), {g.graph['kind']} weights")
        edges = [{k: v for k, v in e.items() if k != "kernel"} for e in edges]
    _emit(edges, False, csv_file)
