"""`circuitatlas analyze | annotate ... | featurevis`: analyses whose results are written back onto the graph."""

from __future__ import annotations

import sys

import click

from circuitatlas.cli.context import CliContext, ProjectErrors
from circuitatlas.cli.output import echo_json, echo_table
from circuitatlas.cli.ranges import COUNT, POSITIVE, SEED


@click.group(cls=ProjectErrors)
def analyze() -> None:
    """Analyses whose results are written back onto the graph."""


@analyze.command("toy-superposition")
@click.option("--features", default=200, show_default=True, type=COUNT, help="Features n of the sparsity sweep.")
@click.option("--hidden", default=20, show_default=True, type=COUNT, help="Hidden dimensions m.")
@click.option("--densities", default=24, show_default=True, type=COUNT,
              help="Models in the sweep (density 1 to 0.005).")
@click.option("--steps", default=4000, show_default=True, type=COUNT, help="Adam steps per model.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Save the two plots (PNG) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def analyze_toy_cmd(features: int, hidden: int, densities: int, steps: int, seed: int, out_dir: str | None,
                    as_json: bool) -> None:
    """Toy Models of Superposition: sparsity sweep (D*, fractions) and two-feature phase diagram."""
    from pathlib import Path

    from circuitatlas.analysis import toy_superposition as T

    if not as_json:
        click.echo(f"training {densities} toy models ({features} features in {hidden} dims) and the "
                   "two-feature phase diagram on the CPU ...")
    sweep = T.sparsity_sweep(features, hidden, densities, steps=steps, seed=seed)
    phases = T.two_feature_phases(steps=min(steps, 3000), seed=seed)
    data = T.summary(sweep, phases)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        data["plots"] = [str(Path(out_dir) / "toy-sweep.png"), str(Path(out_dir) / "toy-phases.png")]
        T.plot_sweep(sweep).save(data["plots"][0])
        T.plot_phases(phases).save(data["plots"][1])
    if as_json:
        echo_json(data)
        return
    click.echo(f"D* = m/||W||_F^2 on the plateau at 1 for 1/density in {data['plateau_1']}, "
               f"at 1/2 for {data['plateau_half']}")
    click.echo("features at each fraction D_i: " + ", ".join(f"{k}: {v}" for k, v in data["fractions"].items()))
    for density, row in zip(data["phases"]["density"], data["phases"]["phase"]):
        click.echo(f"  density {density:<7} " + " ".join({"not_represented": ".", "dedicated": "D",
                                                           "superposition": "S"}[p] for p in row))
    click.echo("  (columns: importance of feature 2 from 0.1 to 10; . not represented, D dedicated, S superposition)")
    for path in data.get("plots", []):
        click.echo(f"  plot: {path}")


@analyze.command("svd")
@click.argument("model")
@click.option("--from", "src", required=True, help="Source layer (e.g. inception3a).")
@click.option("--to", "dst", required=True, help="Target layer (e.g. inception3b).")
@click.option("-k", "k", type=COUNT, help="Number of clusters (default: from the spectral gap).")
@click.option("--kind", type=click.Choice(["auto", "expanded", "direct"]), default="auto", show_default=True,
              help="Which weights: expanded when stored, else direct.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save a PNG of both sides' layout.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def analyze_svd_cmd(obj: CliContext, model: str, src: str, dst: str, k: int | None, kind: str, plot: str | None,
                    as_json: bool) -> None:
    """SVD co-clustering of |W| between two layers (branch specialization)."""
    result = obj.atlas.analyze_svd(model, src, dst, k=k, kind=kind, plot=plot)
    data = result.summary()
    if as_json:
        echo_json(data)
        return
    click.echo(f"{model}: {result.src} -> {result.dst} ({data['kind']} weights): k={data['k']}, "
               f"singular values {', '.join(f'{v:.3f}' for v in data['singular_values'][:6])}")
    for side in ("input", "output"):
        sizes = data[f"{side}_cluster_sizes"]
        click.echo(f"  {side} clusters: " + ", ".join(f"#{i}: {n} units" for i, n in enumerate(sizes)))
    for side, rep in data["branch_reports"].items():
        click.echo(f"  {side} branches: cluster {rep['cluster']} holds {rep['count']} units of {rep['branch']} "
                   f"(p = {rep['p_value']:.2g})")
    if plot:
        click.echo(f"  plot: {plot}")


@click.group(cls=ProjectErrors)
def annotate() -> None:
    """Characterise neurons and store the result on them."""


@annotate.command("tuning")
@click.argument("model")
@click.option("--layer", required=True, help="Layer whose units are measured.")
@click.option("--stimulus", help="A stimulus with an orientation (default: the probe battery's most selective).")
@click.option("--angles", "n_angles", default=64, show_default=True, type=click.IntRange(min=2),
              help="Number of orientations.")
@click.option("--radius", type=POSITIVE, help="Curve radius in pixels (curve stimulus).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def annotate_tuning_cmd(obj: CliContext, model: str, layer: str, stimulus: str | None, n_angles: int,
                        radius: float | None, as_json: bool) -> None:
    """Radial tuning: stores orientation, orientation_selectivity and tuning on each neuron."""
    params = {"radius": radius} if radius is not None else {}
    result = obj.atlas.annotate_tuning(model, layer, stimulus=stimulus, n_angles=n_angles, **params)
    rows = [{"channel": c, "orientation": round(float(result.preferred_deg[i]), 1),
             "selectivity": round(float(result.selectivity[i]), 3)} for i, c in enumerate(result.channels)]
    if as_json:
        echo_json(rows)
        return
    echo_table(rows)
    click.echo(f"{result.params.get('probe', result.stimulus)} tuning stored on {len(rows)} neurons of "
               f"{model}/{result.layer}")


@annotate.command("examples")
@click.argument("model")
@click.option("--layer", required=True)
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Image folder.")
@click.option("-k", "k", default=9, show_default=True, type=COUNT, help="Examples per neuron.")
@click.pass_obj
def annotate_examples_cmd(obj: CliContext, model: str, layer: str, images: str, k: int) -> None:
    """Top-k dataset examples per neuron, saved as PNG crops and linked as `examples`."""
    found = obj.atlas.annotate_examples(model, layer, images, k=k)
    click.echo(f"stored {k} examples for each of {len(found)} neurons of {model}/{layer}; see the "
               "neurons' `examples` property")


@click.command("featurevis")
@click.argument("model")
@click.option("--layer", "layer_spec", required=True,
              help="Layer to render (one image per channel); several comma-separated, or 'observed' for all "
                   "observation layers.")
@click.option("--channels", help="Comma-separated channels (default: all).")
@click.option("--steps", default=512, show_default=True, type=COUNT)
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=8), help="Image size in pixels.")
@click.option("--lr", default=0.05, show_default=True, type=POSITIVE)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--param", default="pixel", show_default=True, type=click.Choice(["pixel", "fft", "maco"]),
              help="Image parameterisation: pixels, Fourier with decorrelated colour, or magnitude-constrained "
                   "Fourier.")
@click.option("--transforms", default="none", show_default=True, type=click.Choice(["none", "shift", "standard"]),
              help="Random transforms at each step: none, pad+jitter, or Lucid's jitter+scale+rotation.")
@click.option("--start", default="stimulus", show_default=True, type=click.Choice(["stimulus", "noise"]),
              help="Start each image from the unit's best synthetic stimulus, or from noise.")
@click.option("--diversity", default=0, show_default=True, type=click.IntRange(min=0, max=64),
              help="Also render N differing images per unit (0: none).")
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--chunk", type=COUNT, help="Channels per batch (default: 16 on CPU, 512 on CUDA).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def featurevis_cmd(obj: CliContext, model: str, layer_spec: str, channels: str | None, steps: int, size: int,
                   lr: float, seed: int, param: str, transforms: str, start: str, diversity: int,
                   device: str | None, chunk: int | None, as_json: bool) -> None:
    """Render feature visualisations of layers and store them on their neurons."""
    from tqdm import tqdm

    try:
        chosen = [int(c) for c in channels.split(",")] if channels else None
    except ValueError:
        raise click.BadParameter(f"expected channel numbers such as 0,5,9, not {channels!r}",
                                 param_hint="--channels") from None
    known = {r["name"]: r for r in obj.atlas.layers(model)}
    if layer_spec == "observed":
        names = [name for name, r in known.items() if r["observed"] and r["kind"] != "input"]
    else:
        names = [obj.atlas.resolve_layer(model, name.strip()) for name in layer_spec.split(",") if name.strip()]
    total = sum(len(chosen) if chosen else known.get(name, {}).get("channels") or 0 for name in names)
    with tqdm(total=total, unit="channel", file=sys.stderr, disable=None) as bar:
        settings = _render_settings(steps=steps, size=size, lr=lr, seed=seed, param=param, transforms=transforms,
                                    start=start)
        reports = obj.atlas.featurevis_layers(model, names, chosen, settings=settings, device=device, chunk=chunk,
                                              progress=bar.update, diversity=diversity)
    if as_json:
        echo_json(reports[0] if len(reports) == 1 else reports)
        return
    for report in reports:
        click.echo(f"{model}/{report['layer']}: rendered {report['rendered']}, skipped {report['skipped']} already "
                   f"rendered; contact sheet: {report['sheet']}")
        for c, why in report["left_out"].items():
            click.echo(f"note: channel {c} left off the contact sheet: {why}", err=True)


def _render_settings(**fields):
    from circuitatlas.analysis.featurevis.settings import RenderSettings  # imports torch: only when rendering

    return RenderSettings(**fields)


@click.command("decompose")
@click.argument("model")
@click.option("--layer", required=True, help="The target unit's layer.")
@click.option("--channel", required=True, type=click.IntRange(min=0), help="The target unit's channel.")
@click.option("--from", "upstream", required=True, help="An earlier observation layer to decompose over.")
@click.option("--min-share", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Leave positions whose weight vector is under this share of the strongest grey.")
@click.option("--steps", default=512, show_default=True, type=COUNT)
@click.option("--lr", default=0.05, show_default=True, type=POSITIVE)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def decompose_cmd(obj: CliContext, model: str, layer: str, channel: int, upstream: str, min_share: float, steps: int,
                  lr: float, seed: int, as_json: bool) -> None:
    """Decomposed feature visualisation: one image per position of a unit's expanded weights."""
    report = obj.atlas.decomposed(model, layer, channel, upstream, min_share=min_share,
                                  settings=_render_settings(steps=steps, lr=lr, seed=seed))
    if as_json:
        echo_json(report)
        return
    click.echo(f"{model}/{report['layer']}:{channel} over {report['upstream']}: {report['rendered']} of "
               f"{report['shape'][0]}x{report['shape'][1]} positions drawn; grid: {report['grid']}")
