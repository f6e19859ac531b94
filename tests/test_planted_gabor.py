"""The Gabor planted network measured back by independent means (no database, a few seconds)."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest
import torch
import torch.fx

from circuitatlas.analysis.planted import PlantedNetwork
from circuitatlas.analysis.planted_gabor import build, shuffled

SEEDS = [0, 1, 2, 3]
SIZE = 40


@lru_cache(maxsize=None)
def _net(seed: int) -> PlantedNetwork:
    return build(seed, size=SIZE)


def _members(net: PlantedNetwork, kind: str) -> dict:
    return next(m for m in net.truth["motifs"] if m["kind"] == kind)


def _ch(name: str) -> int:
    return int(name.split(":")[1])


def _by_role(motif: dict, role: str) -> list[tuple[int, dict]]:
    return [(_ch(n), info) for n, info in motif["members"].items() if info["role"] == role]


def _circ(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _project(mod: torch.nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = torch.relu(mod.expand(torch.relu(mod.edges(imgs))))
        return torch.relu(mod.project(torch.relu(mod.depthwise(x))))


def _step_edges(n: int = 16, size: int = SIZE, dirs: list[float] | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """(directions, images): half-planes bright on the side facing each direction (y up)."""
    rows, cols = np.mgrid[0:size, 0:size]
    x, y = cols - size // 2, size // 2 - rows
    dirs = np.arange(n) * 360.0 / n if dirs is None else np.asarray(dirs, dtype=float)
    imgs = []
    for d in dirs:
        s = x * np.cos(np.deg2rad(d)) + y * np.sin(np.deg2rad(d))
        img = np.where(np.abs(s) < 1e-9, 0.5, (s > 0).astype(float))
        imgs.append(np.repeat(img[None], 3, 0))
    return dirs, torch.tensor(np.stack(imgs), dtype=torch.float32)


@pytest.mark.parametrize("seed", [0, 5])
def test_runs_and_traces(seed):
    net = _net(seed)
    x = torch.rand(2, 3, SIZE, SIZE)
    out = net.module(x)
    assert out.shape == (2, net.module.top.out_channels, SIZE, SIZE)
    traced = torch.fx.symbolic_trace(net.module)
    assert torch.allclose(traced(x), out)
    targets = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert targets == ["edges", "expand", "depthwise", "project", "top"]


@pytest.mark.parametrize("seed", SEEDS)
def test_bottleneck_is_pmat_times_blob(seed):
    mod = _net(seed).module
    n_a, n_b = mod.edges.out_channels, mod.project.out_channels
    dw = mod.depthwise.weight.detach()[:, 0].double()
    blob = dw[0]
    assert torch.equal(dw, blob.expand_as(dw)) and (blob >= 0).all()
    expand = mod.expand.weight.detach()[:, :, 0, 0].double()
    assert (expand >= 0).all() and ((expand > 0).sum(1) == 1).all()  # each expanded channel copies one input
    pmat = mod.project.weight.detach()[:, :, 0, 0].double() @ expand
    # jacobian of the centre of every project channel w.r.t. an edges map, linear path (no ReLU)
    z = torch.zeros(1, n_a, SIZE, SIZE, dtype=torch.float64, requires_grad=True)
    layers = [mod.expand.double(), mod.depthwise.double(), mod.project.double()]
    y = z
    for layer in layers:
        y = layer(y)
    c, r = SIZE // 2, blob.shape[0] // 2
    measured = torch.stack([torch.autograd.grad(y[0, o, c, c], z, retain_graph=True)[0][0] for o in range(n_b)])
    for layer in layers:
        layer.float()
    expected = torch.zeros_like(measured)
    expected[:, :, c - r:c + r + 1, c - r:c + r + 1] = pmat[:, :, None, None] * blob
    assert torch.allclose(measured, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    # ReLUs after expand and depthwise do nothing on non-negative inputs
    e = torch.rand(1, n_a, SIZE, SIZE)
    lin = mod.depthwise(mod.expand(e))
    assert torch.equal(torch.relu(mod.depthwise(torch.relu(mod.expand(e)))), lin)


@pytest.mark.parametrize("seed", SEEDS)
def test_family_edges_face_their_direction(seed):
    net = _net(seed)
    dirs, imgs = _step_edges()
    with torch.no_grad():
        resp = torch.relu(net.module.edges(imgs))[:, :, SIZE // 2, SIZE // 2].numpy()
    up = _by_role(_members(net, "rotation_equivariance"), "upstream")
    assert len(up) == net.truth["params"]["n_directions"]
    for ch, info in up:
        assert resp[:, ch].max() > 0.2
        assert _circ(dirs[np.argmax(resp[:, ch])], info["orientation"]) <= 360 / 16 + 1e-9
    # the downstream family is tuned to its own direction as well (broader: allow one more step)
    down = _project(net.module, imgs)[:, :, SIZE // 2, SIZE // 2].numpy()
    for ch, info in _by_role(_members(net, "rotation_equivariance"), "downstream"):
        assert down[:, ch].max() > 0
        assert _circ(dirs[np.argmax(down[:, ch])], info["orientation"]) <= 2 * 360 / 16 + 1e-9


@pytest.mark.parametrize("seed", SEEDS)
def test_flip_pairs_are_exact_mirrors(seed):
    net = _net(seed)
    w = net.module.edges.weight.detach()
    pairs = _members(net, "flip_equivariance")["pairs"]
    assert len(pairs) >= 2
    for a, b in pairs:
        assert torch.equal(w[_ch(b)], w[_ch(a)].flip(-1))
    case = _by_role(_members(net, "union_over_cases"), "case")[0][0]
    mirror = _by_role(_members(net, "union_over_cases"), "case_mirror")[0][0]
    assert [f"edges:{case}", f"edges:{mirror}"] in pairs
    assert (w[case] - w[case].flip(-1)).norm() > 0.5 * w[case].norm()  # clearly asymmetric
    orient = {_ch(n): i["orientation"] for n, i in net.truth["units"].items()
              if n.startswith("edges:") and "orientation" in i}
    for a, b in pairs[1:]:
        assert _circ(orient[_ch(b)], 180 - orient[_ch(a)]) < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_union_over_cases_responds(seed):
    net = _net(seed)
    motif = _members(net, "union_over_cases")
    w = net.module.edges.weight.detach()
    case, mirror = (_by_role(motif, r)[0][0] for r in ("case", "case_mirror"))
    p1, p2 = (_by_role(motif, r)[0][0] for r in ("pathway", "pathway_mirror"))
    union = _by_role(motif, "union")[0][0]
    imgs = torch.full((2, 3, SIZE, SIZE), 0.5)
    k, c = w.shape[-1], SIZE // 2
    for i, ch in enumerate((case, mirror)):
        imgs[i, :, c - k // 2:c + k // 2 + 1, c - k // 2:c + k // 2 + 1] += w[ch] / (2 * w[ch].abs().max())
    imgs = imgs.clamp(0, 1)
    proj = _project(net.module, imgs)
    with torch.no_grad():
        top = net.module(imgs)
    assert (top[:, union, c, c] > 0).all()
    assert proj[0, p1, c, c] > proj[1, p1, c, c] and proj[1, p2, c, c] > proj[0, p2, c, c]
    # the union is driven by the pathways, not by weight noise: its centre weight on each is about 1
    assert top[0, union, c, c] > proj[0, p1, c, c] and top[1, union, c, c] > proj[1, p2, c, c]


@pytest.mark.parametrize("seed", SEEDS)
def test_superposition_carriers_respond(seed):
    net = _net(seed)
    sup = _members(net, "superposition")
    (feature, info), = ((n, i) for n, i in sup["members"].items() if i["role"] == "feature")
    carriers = list(sup["other_features"])
    others = [net.truth["units"][sup["other_features"][c]]["orientation"] for c in carriers]
    _, imgs = _step_edges(dirs=[info["orientation"], *others])
    resp = _project(net.module, imgs)[:, :, SIZE // 2, SIZE // 2]
    for j, c in enumerate(carriers):
        assert resp[0, _ch(c)] > 0 and resp[1 + j, _ch(c)] > 0


@pytest.mark.parametrize("seed", range(10))
def test_truth_consistent(seed):
    net = _net(seed)
    truth = net.truth
    assert json.loads(json.dumps(truth)) == truth and truth["generator"] == "planted_gabor"
    mod = net.module
    counts = {name: getattr(mod, name).out_channels for name in ("edges", "project", "top")}
    named = [n for m in truth["motifs"] for n in m.get("members", {})]
    named += [n for m in truth["motifs"] for pair in m.get("pairs", []) for n in pair]
    named += [n for m in truth["motifs"] for kv in m.get("other_features", {}).items() for n in kv]
    for name in set(named) | set(truth["units"]):
        layer, ch = name.split(":")
        assert 0 <= int(ch) < counts[layer]
    for layer, n in counts.items():  # every channel is planted, each with one role
        assert sorted(_ch(u) for u in truth["units"] if u.startswith(layer + ":")) == list(range(n))
    flat = [n for m in truth["motifs"] for pair in m.get("pairs", []) for n in pair]
    assert len(flat) == len(set(flat))
    sup = _members(net, "superposition")
    assert set(sup["other_features"]) == {n for n, i in sup["members"].items() if i["role"] == "carrier"}
    assert len(set(sup["other_features"].values())) == len(sup["other_features"])
    rot = _members(net, "rotation_equivariance")
    k = truth["params"]["n_directions"]
    assert rot["family_step"] == pytest.approx(360 / k) and len(rot["members"]) == 2 * k


def test_seeds_vary_shapes():
    def shape(seed: int) -> tuple:
        mod = build(seed, size=SIZE).module
        return tuple(tuple(getattr(mod, n).weight.shape) for n in ("edges", "depthwise", "project", "top"))
    assert len({shape(seed) for seed in range(10)}) > 1


def _rows(t: torch.Tensor) -> list[tuple]:
    return sorted(map(tuple, t.reshape(t.shape[0], -1).tolist()))


def test_shuffled_keeps_kernels_changes_assignment():
    net = _net(0)
    null = shuffled(net, seed=1)
    assert null.truth["shuffled"] and "shuffled" not in net.truth
    for name in ("edges", "project", "top"):
        a, b = getattr(net.module, name).weight.detach(), getattr(null.module, name).weight.detach()
        ka, kb = a.reshape(-1, *a.shape[2:]), b.reshape(-1, *b.shape[2:])
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
        assert _rows(ka) == _rows(kb)  # the same kernels, whole
        assert not torch.equal(a, b)
