"""Real architectures at real size, without a database: every torchvision CNN traces and plans
with the default options, the residual stream is a layer of add neurons, and the ops of
ConvNeXt, ShuffleNet, EfficientNet and MNASNet give the kernels their parameters say
(independent computations: parameter arithmetic, torchvision's own channel shuffle, autograd on
a linearised copy built by module surgery)."""

from __future__ import annotations

import copy
import dataclasses
import os
import re

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, shufflenetv2

from circuitatlas.ingest import rows
from circuitatlas.ingest.expanded import expanded_kernels
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.ingest.plan import plan_ingest
from circuitatlas.ingest.writer import IngestOptions

TRANSFORMERS = ("vit_", "swin_", "maxvit_")  # not CNNs: left out on purpose


def _cnn_names() -> list[str]:
    return [n for n in torchvision.models.list_models(module=torchvision.models) if not n.startswith(TRANSFORMERS)]


def _random(name: str) -> nn.Module:
    """``name`` with seeded random weights, built without torchvision's slow initialisers where
    the builder allows it (RegNet's does not)."""
    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name)
        model = model.to_empty(device="cpu")
    except NotImplementedError:
        return torchvision.models.get_model(name).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.05, generator=generator)
        for key, buffer in model.named_buffers():
            if key.endswith("running_var"):
                buffer.uniform_(0.5, 2.0, generator=generator)
            elif buffer.is_floating_point():
                buffer.zero_()
    return model.eval()


def _direct(graph, layer):
    return {src: (o, i, k) for src, o, i, k in rows.direct_blocks(graph.weight_layers[layer])}


_SIZE_WORDS = {"tiny": 0, "small": 1, "s": 1, "base": 2, "m": 2, "large": 3, "l": 3}


def _family(name: str) -> str:
    """The architecture family of a torchvision name: sizes, widths and depths stripped
    (``resnet50`` -> ``resnet``, ``regnet_y_1_6gf`` -> ``regnet_y``), versions kept."""
    key = re.sub(r"_(tiny|small|base|large|[sml])$", "", name)
    key = re.sub(r"(_\d+)*(mf|gf)$", "", key)
    key = re.sub(r"_x\d_\d$|_\d+x\d+d$|_\d+$", "", key)
    return key if re.search(r"_v\d$", key) else re.sub(r"(?<=[a-z])\d+", "", key)


def _size(name: str) -> float:
    """An order of a family's members by size: the size word, else the flops or depth in the name."""
    word = name.rsplit("_", 1)[-1]
    if word in _SIZE_WORDS:
        return _SIZE_WORDS[word]
    flops = re.search(r"(\d+(?:_\d+)?)(mf|gf)$", name)
    if flops:
        return float(flops[1].replace("_", ".")) * (1e-3 if flops[2] == "mf" else 1.0)
    digits = re.findall(r"\d+", name)
    return float(digits[0]) if digits else 0.0


def _walked() -> list[str]:
    """The smallest member of every family (a family torchvision adds is walked too), and the
    bottleneck ResNet; ``CIRCUITATLAS_WALK_ALL=1`` walks every CNN (68 today, about 4 minutes)."""
    names = _cnn_names()
    if os.environ.get("CIRCUITATLAS_WALK_ALL") == "1":
        return names
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(_family(name), []).append(name)
    return sorted({min(members, key=lambda n: (_size(n), n)) for members in families.values()} | {"resnet50"})


def test_every_torchvision_cnn_family_traces_and_plans():
    """Each classification CNN family torchvision lists (a new one included) builds its layer
    graph at its default input size, and its direct edges are at most the weight pairs plus one
    per summand channel: the residual stream does not multiply edges."""
    names = _cnn_names()
    assert len(names) >= 68 and len({_family(n) for n in names}) >= 19
    failures = {}
    for name in _walked():
        size = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        try:
            graph = build_layer_graph(_random(name), size, force=True)  # the memory check: test_faults.py
            plan = plan_ingest(graph, IngestOptions(expanded=False), name, name)
        except Exception as exc:  # collected so one run names every failure
            failures[name] = f"{type(exc).__name__}: {exc}"
            continue
        bound = plan.weight_pairs + plan.summand_channels
        if not 0.98 * bound <= plan.direct_edges <= bound:
            failures[name] = f"{plan.direct_edges} direct edges for {bound} weight pairs + summand channels"
        del graph
    assert not failures, failures


def test_family_keys_group_sizes_not_architectures():
    assert _family("resnet152") == _family("resnet18") == "resnet"
    assert _family("regnet_y_1_6gf") == _family("regnet_y_128gf") == "regnet_y" != _family("regnet_x_400mf")
    assert _family("mobilenet_v2") != _family("mobilenet_v3_small") == _family("mobilenet_v3_large")
    assert _family("efficientnet_b7") != _family("efficientnet_v2_s") and _family("vgg11") != _family("vgg11_bn")
    assert min(["convnext_large", "convnext_tiny", "convnext_base"], key=_size) == "convnext_tiny"
    assert min(["regnet_x_8gf", "regnet_x_400mf", "regnet_x_1_6gf"], key=_size) == "regnet_x_400mf"


def test_convnext_kernels_carry_layernorm_and_layer_scale():
    """ConvNeXt: LayerNorm over channels (channels-last, and LayerNorm2d in the stem) is a
    per-position normaliser whose weight multiplies the kernels that read it; the layer scale is
    the weight of the block's edge into the residual stream."""
    model = _random("convnext_tiny")
    with torch.no_grad():  # random, so that a missing factor shows
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 2.0)
            if isinstance(module, convnext.CNBlock):
                module.layer_scale.uniform_(0.5, 2.0)
    graph = build_layer_graph(model, (3, 64, 64))
    stem_ln = model.features[0][1].weight.detach().double().numpy()
    block = model.features[1][0]
    ln = block.block[2].weight.detach().double().numpy()

    dw = _direct(graph, "features.1.0.block.0")["features.0.0"]
    expected = block.block[0].weight.detach().double().numpy()[:, 0] * stem_ln[:, None, None]
    np.testing.assert_allclose(dw[2], expected[dw[0]], rtol=1e-5, atol=1e-7)

    out_idx, in_idx, kernels = _direct(graph, "features.1.0.block.3")["features.1.0.block.0"]
    expected = block.block[3].weight.detach().double().numpy() * ln[None, :]
    np.testing.assert_allclose(kernels[:, 0, 0], expected[out_idx, in_idx], rtol=1e-5, atol=1e-7)
    assert graph.layers["features.1.0.block.3"].channels_last and graph.layers["features.1.0.block.3"].shape == (
        384, 16, 16)

    summands = _direct(graph, "features.1.0")
    assert graph.layers["features.1.0"].kind == "add" and set(summands) == {"features.1.0.block.5", "features.0.0"}
    o, i, k = summands["features.1.0.block.5"]
    np.testing.assert_allclose(k[:, 0, 0], block.layer_scale.detach().double().numpy().reshape(-1)[o], rtol=1e-6)
    o, i, k = summands["features.0.0"]
    np.testing.assert_allclose(k[:, 0, 0], stem_ln[o], rtol=1e-6)


def _linearised_convnext(model: nn.Module) -> nn.Module:
    """ConvNeXt linearised by module surgery: GELU -> identity, every LayerNorm -> its weight."""

    class Weight(nn.Module):
        def __init__(self, norm: nn.LayerNorm, channels_first: bool):
            super().__init__()
            shape = (-1, 1, 1) if channels_first else (-1,)
            self.register_buffer("w", norm.weight.detach().reshape(shape))

        def forward(self, x):
            return x * self.w

    lin = copy.deepcopy(model).eval()
    for name, module in list(lin.named_modules()):
        parent_name, _, attr = name.rpartition(".")
        parent = lin.get_submodule(parent_name) if parent_name else lin
        if isinstance(module, nn.GELU):
            setattr(parent, attr, nn.Identity())
        elif isinstance(module, nn.LayerNorm):
            setattr(parent, attr, Weight(module, isinstance(module, convnext.LayerNorm2d)))
    return lin


def test_convnext_expanded_weights_equal_autograd():
    model = _random("convnext_tiny")
    size, src, dst = (3, 64, 64), "features.1.0", "features.1.1"
    graph = build_layer_graph(model, size, [src, dst])
    out_idx, in_idx, kernels, (y0, x0) = expanded_kernels(graph, src, dst)
    kh, kw = kernels.shape[1:]
    lin = _linearised_convnext(model)
    captured = {}

    def cut(_m, _i, out):
        captured["a"] = out.detach().requires_grad_(True)
        return captured["a"]

    hooks = [lin.get_submodule(src).register_forward_hook(cut),
             lin.get_submodule(dst).register_forward_hook(lambda _m, _i, out: captured.setdefault("b", out))]
    try:
        lin(torch.zeros(1, *size))
    finally:
        for hook in hooks:
            hook.remove()
    b = captured["b"]
    full = np.zeros((graph.layers[dst].channels, graph.layers[src].channels, kh, kw), dtype=np.float32)
    full[out_idx, in_idx] = kernels
    for j in (0, 17, 95):
        (g,) = torch.autograd.grad(b[0, j, b.shape[2] // 2, b.shape[3] // 2], captured["a"], retain_graph=True)
        ref = g[0].numpy()
        scale = np.abs(ref).max()
        np.testing.assert_allclose(full[j], ref[:, y0:y0 + kh, x0:x0 + kw], rtol=1e-4, atol=1e-6 * scale)
        ref[:, y0:y0 + kh, x0:x0 + kw] = 0
        assert np.abs(ref).max() == 0


def test_channel_shuffle_is_a_permutation_of_sources():
    """ShuffleNetV2: the second half of a shuffled map, as torchvision's own channel_shuffle
    orders it, is what the next unit's branch reads."""
    model = _random("shufflenet_v2_x0_5")
    graph = build_layer_graph(model, (3, 64, 64))
    width = graph.layers["stage2.0.branch1.2"].channels
    catted = [("stage2.0.branch1.2", c) for c in range(width)] + [("stage2.0.branch2.5", c) for c in range(width)]
    order = shufflenetv2.channel_shuffle(torch.arange(2 * width, dtype=torch.float32).reshape(1, -1, 1, 1), 2)
    shuffled = [catted[int(i)] for i in order.reshape(-1)]
    reader = graph.weight_layers["stage2.1.branch2.0"]
    assert [s for (s,) in reader.sources] == shuffled[width:]


def test_squeeze_excite_gate_and_global_mean():
    """EfficientNet: a residual MBConv is a sum; the projection reads the gated depthwise
    neurons (the gate adds no edge into them); MNASNet's x.mean([2, 3]) keeps channels."""
    model = _random("efficientnet_b0")
    graph = build_layer_graph(model, (3, 64, 64))
    assert graph.layers["features.2.1"].kind == "add"
    assert set(_direct(graph, "features.2.1")) == {"features.2.1.block.3.0", "features.2.0.block.3.0"}
    assert set(_direct(graph, "features.2.1.block.3.0")) == {"features.2.1.block.1.0"}
    assert set(_direct(graph, "features.2.1.block.2.fc1")) == {"features.2.1.block.1.0"}

    mnasnet = build_layer_graph(_random("mnasnet0_5"), (3, 64, 64))
    head = mnasnet.weight_layers["classifier.1"]
    assert head.sources == [(("layers.14", c),) for c in range(1280)]


TIMM_CNNS = ("resnet18", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnetx_002", "densenet121")


@pytest.mark.parametrize("name", TIMM_CNNS)
def test_timm_cnns_trace_and_plan(name):
    """Popular timm CNNs (random init): their own norm+activation layers, drop path, squeeze-excite
    and ConvNeXt's reshaped layer scale are followed; the residual stream does not multiply edges."""
    pytest.importorskip("timm")
    from circuitatlas.ingest.sources import load_model

    model = load_model(f"timm:{name}").module
    with torch.no_grad():  # timm zero-initialises each block's last BatchNorm: no edges through it
        for module in model.modules():
            if getattr(module, "running_var", None) is not None and getattr(module, "weight", None) is not None:
                module.weight.uniform_(0.5, 2.0)
    graph = build_layer_graph(model, (3, 64, 64))
    plan = plan_ingest(graph, IngestOptions(expanded=False), name, name)
    bound = plan.weight_pairs + plan.summand_channels
    assert 0.98 * bound <= plan.direct_edges <= bound
    assert len(graph.observation_layers) >= 3


def test_timm_layer_scale_reaches_the_residual_edges():
    """timm's ConvNeXt multiplies by ``gamma.reshape(1, -1, 1, 1)`` (an op on a parameter): the
    factor is worked out and carried by the block's edge into the residual stream."""
    pytest.importorskip("timm")
    from circuitatlas.ingest.sources import load_model

    model = load_model("timm:convnext_atto").module
    block = model.stages[0].blocks[0]
    with torch.no_grad():
        block.gamma.uniform_(0.5, 2.0)
    graph = build_layer_graph(model, (3, 64, 64))
    adds = [n for n, w in graph.weight_layers.items() if w.kind == "add" and n.startswith("stages.0.blocks.0")]
    assert adds == ["stages.0.blocks.0"]
    (o, _i, k), = [v for src, v in _direct(graph, adds[0]).items() if src.startswith("stages.0.blocks.0.mlp")]
    np.testing.assert_allclose(k[:, 0, 0], block.gamma.detach().double().numpy()[o], rtol=1e-6)


def test_timm_missing_is_one_clear_line(monkeypatch):
    import sys

    from circuitatlas.errors import IngestError
    from circuitatlas.ingest.sources import load_model

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(IngestError, match=r"pip install 'circuitatlas\[timm\]'"):
        load_model("timm:resnet50")


def test_dry_run_counts_without_a_server(tmp_path):
    """`ingest --dry-run --json` prints the plan and needs no database (NEO4J_URI points nowhere)."""
    import json

    from click.testing import CliRunner

    from circuitatlas.cli import main

    result = CliRunner().invoke(main, ["ingest", "resnet18", "--name", "r", "--dry-run", "--json",
                                       "--input-size", "3,64,64"],
                                env={"NEO4J_URI": "bolt://127.0.0.1:1", "CIRCUITATLAS_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    model = torchvision.models.resnet18()
    pairs = sum(m.weight.shape[0] * m.weight.shape[1] for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert plan["weight_pairs"] == pairs and plan["summand_channels"] == 2 * (2 * 64 + 2 * 128 + 2 * 256 + 2 * 512)
    assert plan["direct_edges"] == pairs + plan["summand_channels"]
    assert plan["expanded_edges"] <= sum(a * b for a, b in zip([64] + [64] * 2 + [128] * 2 + [256] * 2 + [512],
                                                                [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2))
    assert plan["store_bytes"] > 0 and plan["seconds"]["bulk"] < plan["seconds"]["online"]
    human = CliRunner().invoke(main, ["ingest", "resnet18", "--name", "r", "--dry-run", "--input-size", "3,64,64"],
                               env={"NEO4J_URI": "bolt://127.0.0.1:1", "CIRCUITATLAS_STATE_DIR": str(tmp_path)})
    assert human.exit_code == 0 and "nothing written" in human.output


def test_dry_run_top_k_counts_what_the_writers_keep():
    """top_k applies per target and source layer (an add neuron keeps one edge from each summand
    with k=1): the plan's count equals the rows the writers would build."""
    graph = build_layer_graph(_random("resnet18"), (3, 64, 64))
    for options in (IngestOptions(top_k_per_neuron=1), IngestOptions(min_l2=0.05, top_k_per_neuron=3)):
        kept = 0
        for layer in graph.weight_layers.values():
            for _src, out_idx, _in_idx, kernels in rows.direct_blocks(layer):
                l2 = rows.l2_norms(kernels.reshape(len(kernels), -1))
                order, _ = rows.select_edges(out_idx, l2, options.min_l2, options.top_k_per_neuron)
                kept += order.size
        assert plan_ingest(graph, dataclasses.replace(options, expanded=False), "r", "r").direct_edges == kept


class _Odd(nn.Module):
    """A constant minus a map, a scaled add, a flatten before BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(4, 4, 1)
        self.norm = nn.BatchNorm1d(4 * 2 * 2)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        y = self.b(1.0 - self.a(x))
        z = self.c(torch.add(0.5, y, alpha=2.0))
        return self.head(self.norm(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 2), 1)))


def test_constants_on_the_left_keep_their_sign_and_alpha():
    model = _Odd().eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2.0)
    graph = build_layer_graph(model, (3, 8, 8))
    np.testing.assert_allclose(graph.weight_layers["b"].weight, -model.b.weight.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(graph.weight_layers["c"].weight, 2.0 * model.c.weight.detach().numpy(), rtol=1e-6)
    # a BatchNorm1d over a flattened map has one factor per position: not followed, the head as it is
    np.testing.assert_allclose(graph.weight_layers["head"].weight.reshape(3, -1),
                               model.head.weight.detach().numpy(), rtol=1e-6)


def test_linear_over_a_channels_first_map_and_channels_last_observation_are_refused():
    from circuitatlas.errors import IngestError

    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.conv(x))  # acts on the width, not on the channels

    with pytest.raises(IngestError, match="unsupported op Linear over the last dim"):
        build_layer_graph(Wrong(), (3, 8, 8))
    with pytest.raises(IngestError, match="channels last"):
        build_layer_graph(_random("convnext_tiny"), (3, 64, 64), ["features.1.0.block.3", "features.1.1"])
