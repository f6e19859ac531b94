"""`circuitatlas compare A B --layers LA:LB[,...]`: units and families matched across two models."""

from __future__ import annotations

import sys

import click

from circuitatlas.cli.context import CliContext
from circuitatlas.cli.output import echo_json
from circuitatlas.cli.ranges import COUNT, SEED


@click.command("compare")
@click.argument("model_a")
@click.argument("model_b")
@click.option("--layers", "layer_pairs", required=True,
              help="Layer pairs LAYER_A:LAYER_B[,LAYER_A2:LAYER_B2], or 'all': every observation layer of A with "
                   "every one of B (the CKA heatmap).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="An image folder added to the probes.")
@click.option("--image-limit", default=2000, show_default=True, type=COUNT, help="At most this many images.")
@click.option("--null-models", type=click.IntRange(1, 64),
              help="Random-init networks of B's architecture, the null of every score (default: enough for "
                   "p-values down to alpha/2 on the smaller layer).")
@click.option("--alpha", default=0.01, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Store the matches with p below this.")
@click.option("--angles", "n_angles", default=16, show_default=True, type=click.IntRange(2),
              help="Orientations of each probe.")
@click.option("--featurevis", is_flag=True,
              help="Add both layers' stored feature visualisations to the probes (off: they dominate the "
                   "correlations).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--plot", type=click.Path(dir_okay=False), help="Save the CKA heatmap and the matched pairs (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print every match, stored or not, as JSON.")
@click.pass_obj
def compare_cmd(obj: CliContext, model_a: str, model_b: str, layer_pairs: str, images: str | None, image_limit: int,
                null_models: int | None, alpha: float, n_angles: int, featurevis: bool, seed: int, plot: str | None,
                as_json: bool) -> None:
    """Match the units of MODEL_A's layers with MODEL_B's (universality): ANALOGOUS and SIMILAR edges."""
    from tqdm import tqdm

    from circuitatlas.jobs.universality import every_pair, parse_layer_pairs, similarity_figure

    pairs = every_pair(obj.atlas.store, model_a, model_b) if layer_pairs == "all" else parse_layer_pairs(layer_pairs)
    with tqdm(unit="probe", file=sys.stderr, disable=None, desc="probes") as bar:
        result = obj.atlas.compare(model_a, model_b, [a for a, _ in pairs], [b for _, b in pairs], images,
                                   null_models=null_models, alpha=alpha, n_angles=n_angles, image_limit=image_limit,
                                   featurevis=featurevis, seed=seed, progress=bar.update)
    data = result.summary()
    if plot:
        similarity_figure(obj.atlas.store, [model_a, model_b], result).save(plot)
        data["plot"] = plot
    if as_json:
        echo_json(data)
        return
    click.echo(f"{model_a} ~ {model_b} over {data['probes']['stimuli']} stimuli and {data['probes']['images']} images "
               f"(null: {data['null_models']} random-init {model_b} networks)")
    for layer in data["layers"]:
        click.echo(f"  {layer['layer_a']} ~ {layer['layer_b']}: CKA {layer['cka']:.3f} (random-init "
                   f"{layer['cka_random']:.3f}, permutation p={layer['cka_p']:.3g}); {layer['stored']} of "
                   f"{len(layer['pairs'])} best matches beat the null (p<{alpha}), {layer['mutual_stored']} mutual; "
                   f"null 99th percentile r={layer['null_q99']}")
        for fam in layer["families"]:
            note = "" if fam["beats_null"] else " (below the null: not stored)"
            click.echo(f"    family {fam['family_a']} ~ {fam['family_b']}: mean r={fam['score']:.2f}, orientations "
                       f"correlate {fam['orientation_corr']}{note}")
    if plot:
        click.echo(f"  plot: {plot}")
