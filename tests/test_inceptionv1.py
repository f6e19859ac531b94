"""InceptionV1 (Lucid's ``inception5h``) by name: its published state-dict layout, names, unit
numbering and branches, the articles' names everywhere, the weights download (a local server,
never the internet) and Inception checkpoints without auxiliary heads."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from circuitatlas.cli import main
from circuitatlas.errors import IngestError, InvalidInput, NotFound
from circuitatlas.ingest import inceptionv1 as iv1
from circuitatlas.ingest import loaders
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.ingest.sources import load_model

# The converted file's layout, written down from its public definition
# (ProGamerGov/pytorch-old-tensorflow-models inception5h.py, the same as Lucent's InceptionV1.py):
# each ``<name>_pre_relu_conv`` is a Conv2d (out, in, k x k) with bias; then the 1008-way logits.
PUBLISHED_CONVS = {
    "conv2d0": (64, 3, 7), "conv2d1": (64, 64, 1), "conv2d2": (192, 64, 3),
    "mixed3a_1x1": (64, 192, 1), "mixed3a_3x3_bottleneck": (96, 192, 1), "mixed3a_5x5_bottleneck": (16, 192, 1),
    "mixed3a_pool_reduce": (32, 192, 1), "mixed3a_3x3": (128, 96, 3), "mixed3a_5x5": (32, 16, 5),
    "mixed3b_1x1": (128, 256, 1), "mixed3b_3x3_bottleneck": (128, 256, 1), "mixed3b_5x5_bottleneck": (32, 256, 1),
    "mixed3b_pool_reduce": (64, 256, 1), "mixed3b_3x3": (192, 128, 3), "mixed3b_5x5": (96, 32, 5),
    "mixed4a_1x1": (192, 480, 1), "mixed4a_3x3_bottleneck": (96, 480, 1), "mixed4a_5x5_bottleneck": (16, 480, 1),
    "mixed4a_pool_reduce": (64, 480, 1), "mixed4a_3x3": (204, 96, 3), "mixed4a_5x5": (48, 16, 5),
    "mixed4b_1x1": (160, 508, 1), "mixed4b_3x3_bottleneck": (112, 508, 1), "mixed4b_5x5_bottleneck": (24, 508, 1),
    "mixed4b_pool_reduce": (64, 508, 1), "mixed4b_3x3": (224, 112, 3), "mixed4b_5x5": (64, 24, 5),
    "mixed4c_1x1": (128, 512, 1), "mixed4c_3x3_bottleneck": (128, 512, 1), "mixed4c_5x5_bottleneck": (24, 512, 1),
    "mixed4c_pool_reduce": (64, 512, 1), "mixed4c_3x3": (256, 128, 3), "mixed4c_5x5": (64, 24, 5),
    "mixed4d_1x1": (112, 512, 1), "mixed4d_3x3_bottleneck": (144, 512, 1), "mixed4d_5x5_bottleneck": (32, 512, 1),
    "mixed4d_pool_reduce": (64, 512, 1), "mixed4d_3x3": (288, 144, 3), "mixed4d_5x5": (64, 32, 5),
    "mixed4e_1x1": (256, 528, 1), "mixed4e_3x3_bottleneck": (160, 528, 1), "mixed4e_5x5_bottleneck": (32, 528, 1),
    "mixed4e_pool_reduce": (128, 528, 1), "mixed4e_3x3": (320, 160, 3), "mixed4e_5x5": (128, 32, 5),
    "mixed5a_1x1": (256, 832, 1), "mixed5a_3x3_bottleneck": (160, 832, 1), "mixed5a_5x5_bottleneck": (48, 832, 1),
    "mixed5a_pool_reduce": (128, 832, 1), "mixed5a_3x3": (320, 160, 3), "mixed5a_5x5": (128, 48, 5),
    "mixed5b_1x1": (384, 832, 1), "mixed5b_3x3_bottleneck": (192, 832, 1), "mixed5b_5x5_bottleneck": (48, 832, 1),
    "mixed5b_pool_reduce": (128, 832, 1), "mixed5b_3x3": (384, 192, 3), "mixed5b_5x5": (128, 48, 5),
}
PUBLISHED = {
    **{f"{name}_pre_relu_conv.weight": (o, i, k, k) for name, (o, i, k) in PUBLISHED_CONVS.items()},
    **{f"{name}_pre_relu_conv.bias": (o,) for name, (o, _, _) in PUBLISHED_CONVS.items()},
    "softmax2_pre_activation_matmul.weight": (1008, 1024), "softmax2_pre_activation_matmul.bias": (1008,),
}
OBSERVED = ["conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d",
            "mixed4e", "mixed5a", "mixed5b"]
BLOCK_CHANNELS = {"mixed3a": 256, "mixed3b": 480, "mixed4a": 508, "mixed4b": 512, "mixed4c": 512, "mixed4d": 528,
                  "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024}


def _random_net(seed: int = 1) -> iv1.InceptionV1:
    torch.manual_seed(seed)
    return iv1.InceptionV1().eval()


def _save_converted(net: iv1.InceptionV1, path: Path, layout: str = "lucent", drop: str | None = None) -> Path:
    keys = iv1.converted_keys(layout)
    state = {keys[k]: v for k, v in net.state_dict().items() if keys[k] != drop}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, iv1.InceptionV1]:
    """A file in the published (Lucent) layout with random weights, and the network it holds."""
    net = _random_net()
    return _save_converted(net, tmp_path_factory.mktemp("weights") / "inception5h.pth"), net


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def file_server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving a folder: yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- the module, offline ---------------------------------------------------------------------------
def test_state_dict_has_the_published_layout():
    with torch.device("meta"):
        net = iv1.InceptionV1()
    shapes = {iv1.converted_keys("lucent")[k]: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == PUBLISHED
    assert len(PUBLISHED) == 116
    # Captum's optim file names the same tensors after its modules
    captum = {iv1.converted_keys("captum")[k]: tuple(v.shape) for k, v in net.state_dict().items()}
    assert captum["conv1.weight"] == (64, 3, 7, 7) and captum["conv3.weight"] == (192, 64, 3, 3)
    assert captum["mixed3b.conv_5x5.weight"] == (96, 32, 5, 5)
    assert captum["mixed4a.conv_3x3_reduce.weight"] == (96, 480, 1, 1)
    assert captum["mixed5b.pool_proj.weight"] == (128, 832, 1, 1) and captum["fc.weight"] == (1008, 1024)
    assert len(captum) == 116


def test_forward_follows_the_published_definition():
    """The module (ceil-mode pools, a ZeroPad2d module, preprocessing inside) computes what the
    converted definition does with explicit TensorFlow-style pads, on [0, 1] RGB input."""
    net = _random_net()
    x = torch.rand(1, 3, 224, 224)

    def lrn(t):
        return F.local_response_norm(t, 11, alpha=11 * 9.999999747378752e-05, beta=0.5, k=2.0)

    def pool(t, stride):
        return F.max_pool2d(F.pad(t, (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1), value=float("-inf")), 3, stride)

    def conv(module, t, pad=0):
        return F.conv2d(F.pad(t, (pad,) * 4), module.weight, module.bias)

    def block(b, t):
        m = b._modules
        return torch.cat([F.relu(conv(m["1x1"], t)), F.relu(conv(m["3x3"], F.relu(conv(m["3x3_bottleneck"], t)), 1)),
                          F.relu(conv(m["5x5"], F.relu(conv(m["5x5_bottleneck"], t)), 2)),
                          F.relu(conv(m["pool_reduce"], pool(t, 1)))], 1)

    with torch.no_grad():
        t = x * 255 - 117
        t = F.relu(F.conv2d(F.pad(t, (2, 3, 2, 3)), net.conv2d0.weight, net.conv2d0.bias, stride=2))
        t = lrn(pool(t, 2))
        t = F.relu(conv(net.conv2d1, t))
        t = pool(lrn(F.relu(conv(net.conv2d2, t, 1))), 2)
        for name in iv1.MIXED:
            t = block(getattr(net, name), t)
            t = pool(t, 2) if name in ("mixed3b", "mixed4e") else t
        expected = F.linear(F.avg_pool2d(t, 7).reshape(1, 1024), net.softmax2_pre_activation.weight,
                            net.softmax2_pre_activation.bias)
        got = net(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_layer_graph_has_the_articles_names_channels_and_branches():
    graph = build_layer_graph(_random_net(), (3, 224, 224))
    assert graph.observation_layers == OBSERVED
    for block, channels in BLOCK_CHANNELS.items():
        assert graph.layers[block].channels == channels
    branches = graph.layers["mixed3b"].branches
    assert [branches.count(b) for b in iv1.BRANCHES] == [128, 192, 96, 64]  # 480 = 128 + 192 + 96 + 64
    assert branches[:128] == ["1x1"] * 128 and branches[320:416] == ["5x5"] * 96
    assert branches[379] == "5x5"  # the curve detector 3b:379 comes from the 5x5 branch
    assert graph.weight_layers["mixed3b.5x5"].weight.shape == (96, 32, 5, 5)
    assert graph.layers["mixed3b"].shape == (480, 28, 28) and graph.layers["conv2d0"].shape == (64, 112, 112)
    assert "mixed3b.5x5" in iv1.LAYER_ALIASES and "3b" in iv1.LAYER_ALIASES["mixed3b"]
    assert "mixed3b_5x5_pre_relu_conv" in iv1.LAYER_ALIASES["mixed3b.5x5"]


def test_expanded_kernels_of_the_5x5_branch_are_5x5_and_whole():
    # the crop window covers every target channel's reach: a 1x1-branch unit's 3x3 reach must not
    # cut the 5x5 branch's kernels (3b:379 sees 3a through a 1x1 bottleneck and a 5x5 conv)
    from circuitatlas.ingest.expanded import expanded_kernels

    from circuitatlas.ingest.expanded import _between, _crop_window, linearise

    graph = build_layer_graph(_random_net(), (3, 128, 128), observation_layers=["mixed3a", "mixed3b"])
    lin = linearise(graph.graph_module)  # at 128 px the maps are 16 x 16: the window really crops
    ordered, downstream = _between(lin, graph.output_nodes["mixed3a"], graph.output_nodes["mixed3b"])
    shape_b = graph.layers["mixed3b"].shape
    assert _crop_window(lin, ordered, downstream, graph.output_nodes["mixed3a"], tuple(graph.layers["mixed3a"].shape),
                        tuple(shape_b[1:]), (shape_b[1] // 2, shape_b[2] // 2)) is not None
    cropped = expanded_kernels(graph, "mixed3a", "mixed3b", lin)
    whole = expanded_kernels(graph, "mixed3a", "mixed3b", lin, crop=False)
    assert cropped[2].shape[1:] == (5, 5) == whole[2].shape[1:]
    np.testing.assert_array_equal(cropped[0], whole[0])
    np.testing.assert_array_equal(cropped[1], whole[1])
    np.testing.assert_allclose(cropped[2], whole[2], rtol=1e-5, atol=1e-7 * np.abs(whole[2]).max())


# -- weights: local copies, download, checksum -------------------------------------------------------
def test_a_local_copy_of_either_layout_loads(converted, tmp_path):
    path, net = converted
    as_checkpoint = load_model(str(path), arch="inceptionv1")
    assert as_checkpoint.source == "checkpoint" and _same_weights(as_checkpoint.module, net)
    as_weights = load_model("inceptionv1", weights=str(path))
    assert as_weights.source == "inceptionv1" and as_weights.weights == str(path)
    assert _same_weights(as_weights.module, net)
    captum = _save_converted(net, tmp_path / "captum.pth", "captum")
    assert _same_weights(load_model(str(captum), arch="inceptionv1").module, net)
    partial = _save_converted(net, tmp_path / "partial.pth", drop="mixed4c_5x5_pre_relu_conv.weight")
    with pytest.raises(IngestError, match="lacks 'mixed4c_5x5_pre_relu_conv.weight'"):
        load_model("inceptionv1", weights=str(partial))
    with pytest.raises(IngestError, match="lacks 'mixed4c_5x5_pre_relu_conv.weight'"):
        load_model(str(partial), arch="inceptionv1")


def test_download_is_checked_cached_and_loaded(converted, file_server, tmp_path, monkeypatch):
    path, net = converted
    folder, url = file_server
    (folder / "inception5h.pth").write_bytes(path.read_bytes())
    spec = iv1.WeightsFile(f"{url}/inception5h.pth", "inception5h.pth", iv1.git_blob_id(path))
    cache = tmp_path / "cache"
    got = iv1.fetch_weights(spec, cache)
    assert got == cache / "models" / "inceptionv1" / "inception5h.pth" and got.read_bytes() == path.read_bytes()
    recorded = (got.parent / "inception5h.pth.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "inception5h.pth").unlink()  # the second call reads the cache, not the server
    assert iv1.fetch_weights(spec, cache) == got
    # the registry's default weights for `inceptionv1` are this download
    monkeypatch.setattr(iv1, "PRETRAINED", spec)
    monkeypatch.setenv("CIRCUITATLAS_CACHE_DIR", str(cache))
    loaded = load_model("inceptionv1")
    assert loaded.weights == "inception5h" and _same_weights(loaded.module, net)


def test_a_corrupted_download_is_refused(converted, file_server, tmp_path):
    path, _ = converted
    folder, url = file_server
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "inception5h.pth").write_bytes(bytes(data))
    spec = iv1.WeightsFile(f"{url}/inception5h.pth", "inception5h.pth", iv1.git_blob_id(path))
    cache = tmp_path / "cache"
    with pytest.raises(IngestError, match="does not match its published checksum.*nothing was cached"):
        iv1.fetch_weights(spec, cache)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_without_internet_the_error_says_what_to_do(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = iv1.WeightsFile(f"http://127.0.0.1:{port}/inception5h.pth", "inception5h.pth", "0" * 40)
    monkeypatch.setattr(iv1, "PRETRAINED", spec)
    monkeypatch.setenv("CIRCUITATLAS_CACHE_DIR", str(tmp_path))
    with pytest.raises(IngestError) as info:
        load_model("inceptionv1")
    message = str(info.value)
    assert "\n" not in message and spec.url in message
    assert "download" in message and "circuitatlas ingest inceptionv1 --weights /path/to/inception5h.pth" in message


# -- in the graph: names everywhere -----------------------------------------------------------------
@pytest.fixture(scope="module")
def ingested(atlas):
    """InceptionV1 with seeded random weights, traced at 64 px (any even size works): every neuron,
    the two strongest direct inputs of each."""
    observed = ["conv2d0_pre_relu", "conv2d1", "conv2d2_pre_relu_conv", "3a", "mixed3b", "4a", "4b", "mixed4c",
                "4d", "4e", "5a", "5b"]  # any of their names, as `--layers` takes them
    atlas.ingest("inceptionv1", "iv1", weights="none", input_size=(3, 64, 64), layers=observed, expanded=False,
                 top_k_per_neuron=2)
    return "iv1"


def test_random_ingest_has_the_articles_layers_and_branches(atlas, ingested):
    meta = atlas.model_meta(ingested)
    assert (meta["source"], meta["arch"], meta["weights"]) == ("inceptionv1", "inceptionv1", "none")
    assert [r["name"] for r in atlas.layers(ingested, observed=True)] == OBSERVED
    layers = {r["name"]: r for r in atlas.layers(ingested)}
    assert {b: layers[b]["channels"] for b in BLOCK_CHANNELS} == BLOCK_CHANNELS
    assert "3b" in layers["mixed3b"]["aliases"] and "mixed3b_5x5" in layers["mixed3b.5x5"]["aliases"]
    counts = atlas.cypher("MATCH (n:Neuron {model: $m, layer: 'mixed3b'}) RETURN n.branch AS b, count(*) AS n",
                          m=ingested)
    assert {r["b"]: r["n"] for r in counts} == {"1x1": 128, "3x3": 192, "5x5": 96, "pool_reduce": 64}


def test_units_resolve_by_any_name(atlas, ingested):
    for unit in ("3b:379", "mixed3b:379", "iv1/mixed3b:379"):
        neuron = atlas.neuron(ingested, unit)
        assert neuron["uid"] == "iv1/mixed3b:379" and neuron["branch"] == "5x5" and neuron["channel"] == 379
    assert atlas.neuron(ingested, "4c:447")["uid"] == "iv1/mixed4c:447"
    assert atlas.neuron(ingested, "mixed3b_5x5_pre_relu_conv:7")["uid"] == "iv1/mixed3b.5x5:7"
    assert atlas.resolve_layer(ingested, "conv2d0_pre_relu") == "conv2d0"
    with pytest.raises(InvalidInput, match="channel 480 is not in mixed3b"):
        atlas.neuron(ingested, "3b:480")
    with pytest.raises(NotFound, match="no layer 'mixed3x'.*did you mean"):
        atlas.neuron(ingested, "mixed3x:1")
    with pytest.raises(InvalidInput):
        atlas.neuron(ingested, "3b")


def test_jobs_and_api_take_the_articles_names(atlas, ingested):
    svd = atlas.analyze_svd(ingested, "conv2d0_pre_relu", "conv2d1_pre_relu", k=2, kind="direct")
    assert (svd.src, svd.dst) == ("conv2d0", "conv2d1")
    assert atlas.weights(ingested, "input", "conv2d0_pre_relu").shape == (64, 3, 7, 7)
    assert atlas.subgraph(ingested, ["conv2d0_pre_relu", "conv2d1"], kind="direct").number_of_nodes() == 128
    pattern = {"nodes": {"a": {"layer": "conv2d0_pre_relu"}, "b": {"layer": "conv2d1_pre_relu"}},
               "edges": [{"src": "a", "dst": "b", "sign": "+"}]}
    assert atlas.search(pattern, ingested)
    tuning = atlas.annotate_tuning(ingested, "3a", channels=[0, 379 - 320], n_angles=8)
    assert tuning.layer == "mixed3a"
    stored = atlas.neuron(ingested, "mixed3a:59")
    assert len(stored["tuning"]) == 8
    images = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    found = atlas.annotate_examples(ingested, "conv2d1_pre_relu", images, channels=[0], k=1)
    assert list(found) == [0] and atlas.neuron(ingested, "conv2d1:0")["examples"]
    report = atlas.featurevis(ingested, "conv2d0_pre_relu", [0], steps=2, size=32)
    assert report["layer"] == "conv2d0" and report["rendered"] == 1
    motifs = atlas.find_motifs("rotation_equivariance", ingested, ["conv2d0_pre_relu", "conv2d1"], n_perm=4,
                               stimulus_params={"radius": 8, "n_angles": 16})
    assert all(set(m.layers) == {"conv2d0", "conv2d1"} for m in motifs)


def test_cli_takes_the_articles_names(atlas, ingested, cli_env, tmp_path, monkeypatch):
    runner = CliRunner()
    out = runner.invoke(main, ["neuron", ingested, "3b:379", "--json"], env=cli_env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["uid"] == "iv1/mixed3b:379" and json.loads(out.output)["branch"] == "5x5"
    out = runner.invoke(main, ["analyze", "svd", ingested, "--from", "conv2d0_pre_relu", "--to", "conv2d1",
                               "-k", "2", "--kind", "direct", "--json"], env=cli_env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["analysis"] == "svd:direct:conv2d0->conv2d1:k=2"
    out = runner.invoke(main, ["neuron", ingested, "3q:1"], env=cli_env)
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "no layer '3q'" in out.output
    # no internet: one line that says what to do
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(iv1, "PRETRAINED", iv1.WeightsFile(f"http://127.0.0.1:{port}/inception5h.pth",
                                                           "inception5h.pth", "0" * 40))
    out = runner.invoke(main, ["ingest", "inceptionv1", "--name", "iv1-offline"],
                        env={**cli_env, "CIRCUITATLAS_CACHE_DIR": str(tmp_path)})
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert "--weights /path/to/inception5h.pth" in out.output


# -- Inception checkpoints without auxiliary heads ---------------------------------------------------
def _torchvision_net(arch: str, **kwargs) -> torch.nn.Module:
    import torchvision

    return torchvision.models.get_model(arch, weights=None, init_weights=False, **kwargs).eval()


@pytest.mark.parametrize("arch, heads", [("googlenet", ("aux1", "aux2")), ("inception_v3", ("AuxLogits",))])
def test_checkpoints_without_auxiliary_heads_load(arch, heads, tmp_path):
    torch.manual_seed(0)
    trained = _torchvision_net(arch, aux_logits=False)  # the usual shape after fine-tuning
    path = tmp_path / f"{arch}.pt"
    torch.save(trained.state_dict(), path)
    with pytest.warns(UserWarning, match="no auxiliary classifiers"):
        loaded = loaders.load_checkpoint(path, arch, False, _torchvision_net)
    assert all(getattr(loaded.module, head) is None for head in heads)
    assert _same_weights(loaded.module, trained)
    # anything the main path needs is still required
    state = trained.state_dict()
    main_key = "inception4a.branch2.1.conv.weight" if arch == "googlenet" else "Mixed_6b.branch7x7_2.conv.weight"
    del state[main_key]
    torch.save(state, path)
    with pytest.raises(IngestError, match=f"lacks {main_key!r}"):
        loaders.load_checkpoint(path, arch, False, _torchvision_net)


def test_googlenet_checkpoint_without_aux_heads_ingests_by_name(tmp_path):
    """Through the registry, as ``circuitatlas ingest FILE --arch googlenet`` loads it."""
    torch.manual_seed(0)
    trained = _torchvision_net("googlenet", aux_logits=False)
    torch.save(trained.state_dict(), tmp_path / "finetuned.pt")
    with pytest.warns(UserWarning, match=r"googlenet is built without them"):
        loaded = load_model(str(tmp_path / "finetuned.pt"), arch="googlenet")
    assert loaded.module.aux1 is None and _same_weights(loaded.module, trained)


def test_git_blob_id_of_known_contents(tmp_path):
    # git's own ids (`git hash-object`), independent of the implementation under test
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    assert iv1.git_blob_id(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert iv1.git_blob_id(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"
