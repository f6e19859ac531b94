"""The viewer's JSON API and pages against the real Neo4j: every page's data checked against an
independent computation (weight arrays, networkx on the stored subgraph, hand-written Cypher),
and the safety rules: files from the artifacts folder only, escaped strings, read-only store,
404/400/503 pages without tracebacks, the token."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import neo4j
import networkx as nx
import numpy as np
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from circuitatlas import names
from circuitatlas.cli import main
from circuitatlas.errors import QueryError
from circuitatlas.store import ReadOnlyStore, Store
from circuitatlas.web import drawing, pages
from circuitatlas.web.app import create_app, is_loopback

HOSTILE = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def module_artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-artifacts")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIRCUITATLAS_ARTIFACTS_DIR", str(folder))
        yield folder


@pytest.fixture()
def artifacts_dir(module_artifacts):
    """This module's renders live for the whole module (the conftest's folder is per test)."""
    return module_artifacts


@pytest.fixture(scope="module")
def served(atlas, module_artifacts):
    """The planted equivariance network ``pl`` (tuning of mid and high, the rotation-equivariance
    family found, feature visualisations of mid and high) and the demo network ``t`` (direct and
    expanded edges, an SVD analysis), behind a test client of the viewer."""
    import torch

    torch.manual_seed(0)
    atlas.ingest("planted:equivariance", "pl", input_size=(3, 33, 33), expanded=False)
    for layer in ("mid", "high"):
        atlas.annotate_tuning("pl", layer, radius=5, width=1.5)
    found = atlas.find_motifs("rotation_equivariance", "pl", ["mid", "high"], n_perm=100, alpha=0.05)
    assert found, "the planted family should be found"
    atlas.featurevis_layers("pl", ["mid", "high"], steps=8, size=33)
    atlas.ingest("tiny", "t", input_size=(3, 32, 32))
    atlas.analyze_svd("t", "block1", "down", k=2)
    client = TestClient(create_app(atlas.store), raise_server_exceptions=False)
    return atlas, client


def get(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:300])
    return response


def test_models_match_the_store(served):
    atlas, client = served
    rows = get(client, "/api/models").json()["models"]
    assert [(m["id"], m["neurons"], m["weight_edges"]) for m in rows] == \
        [(m.id, m.neurons, m.weight_edges) for m in atlas.models()]
    html = get(client, "/").text
    for m in rows:
        assert f'href="{m["url"]}"' in html


def test_model_page_lists_layers_in_order_with_motifs_and_analyses(served):
    atlas, client = served
    data = get(client, "/api/models/pl").json()
    assert [layer["name"] for layer in data["layers"]] == [layer["name"] for layer in atlas.layers("pl")]
    assert [m["uid"] for m in data["motifs"]] == [m["uid"] for m in atlas.motifs("pl")]
    assert any(r["kind"] == "rotation_equivariance" and r["found"] >= 1 for r in data["motif_runs"])
    t = get(client, "/api/models/t").json()
    assert [(a["src"], a["dst"], a["k"]) for a in t["analyses"]] == [("block1", "down", 2)]


def test_layer_page_has_every_unit_and_its_render(served):
    atlas, client = served
    data = get(client, "/api/models/pl/layers/mid").json()
    neurons = atlas.cypher("MATCH (n:Neuron {model: 'pl', layer: 'mid'}) RETURN n.channel AS c, n.featurevis AS f, "
                           "n.orientation_selectivity AS s ORDER BY c")
    assert [u["channel"] for u in data["units"]] == [n["c"] for n in neurons]
    assert data["layer"]["channels"] == len(neurons)
    for unit, neuron in zip(data["units"], neurons):
        assert unit["selectivity"] == pytest.approx(neuron["s"])
        served_png = get(client, unit["featurevis_url"]).content
        assert served_png == Path(neuron["f"]).read_bytes()
    members = {m["uid"] for m in atlas.motifs("pl")[0]["members"]}
    assert {u["uid"] for u in data["units"] if u["motifs"]} == {m for m in members if "/mid:" in m}


def test_first_layer_tiles_are_rgb_kernels(served):
    atlas, client = served
    data = get(client, "/api/models/t/layers/stem.0").json()
    w = atlas.weights("t", "input", "stem.0")  # (out, in, kh, kw)
    for unit in data["units"]:
        rgb = np.asarray(unit["rgb_kernel"])  # (kh, kw, 3)
        assert np.allclose(rgb, np.moveaxis(w[unit["channel"]], 0, -1), atol=1e-6)
    html = get(client, "/models/t/layers/stem.0").text
    assert html.count('class="rgb-kernel"') == len(data["units"])


def test_neuron_partners_match_the_weight_array(served):
    atlas, client = served
    data = get(client, "/api/models/pl/layers/high/3").json()
    w = atlas.weights("pl", "mid", "high")  # (out, in, kh, kw)
    sums = w[3].sum(axis=(1, 2))
    order = sorted(range(len(sums)), key=lambda i: (-abs(sums[i]), names.neuron_uid("pl", "mid", i)))
    shown = data["inputs"]["direct"]
    assert [p["uid"] for p in shown] == [names.neuron_uid("pl", "mid", i) for i in order[:len(shown)]]
    for p in shown:
        assert p["sum"] == pytest.approx(float(sums[p["channel"]]), rel=1e-5)
        assert p["rel"] == pytest.approx(sums[p["channel"]] / np.abs(sums).max(), rel=1e-5)
        assert np.allclose(p["kernel"], w[3, p["channel"]], atol=1e-6)
    assert data["inputs"]["expanded"] == []  # ingested without expanded weights
    assert data["tuning"]["angles"] and len(data["tuning"]["angles"]) == len(data["tuning"]["responses"])
    assert any(m["kind"] == "rotation_equivariance" for m in data["motifs"]) or \
        all("/high:3" not in m["uid"] for m in atlas.motifs("pl")[0]["members"])
    html = get(client, "/models/pl/layers/high/3").text
    assert html.count('class="kernel"') == len(shown) + len(data["outputs"]["direct"])
    assert 'class="polar"' in html and data["circuit_url"] in html.replace("&amp;", "&")


def _circuit_by_networkx(atlas, model, target, depth, min_rel):
    """The circuit recomputed from the whole stored direct graph (rel_in from the sums)."""
    g = atlas.subgraph(model, [layer["name"] for layer in atlas.layers(model)], kind="direct")
    keep, frontier = nx.DiGraph(), [target]
    keep.add_node(target)
    for _ in range(depth):
        nxt = []
        for b in frontier:
            edges = list(g.in_edges(b, data=True))
            strongest = max((abs(d["sum"]) for _, _, d in edges), default=0)
            for a, _, d in edges:
                if d["sum"] != 0 and abs(d["sum"]) >= min_rel * strongest - 1e-9:
                    if a not in keep:
                        nxt.append(a)
                    keep.add_edge(a, b, rel_in=d["sum"] / strongest)
        frontier = nxt
    return keep


def test_circuit_matches_networkx_and_draws_every_edge(served):
    atlas, client = served
    target = "pl/high:0"
    data = get(client, "/api/models/pl/circuit?units=high:0&depth=2&min_rel=0.3").json()
    expected = _circuit_by_networkx(atlas, "pl", target, 2, 0.3)
    assert {n["uid"] for n in data["nodes"]} == set(expected.nodes)
    assert {(e["source"], e["target"]) for e in data["edges"]} == set(expected.edges)
    for e in data["edges"]:
        assert e["rel_in"] == pytest.approx(expected.edges[e["source"], e["target"]]["rel_in"], rel=1e-5)
        assert np.asarray(e["kernel"]).shape == (e["kh"], e["kw"])
    html = get(client, "/models/pl/circuit?units=high:0&depth=2&min_rel=0.3").text
    assert len(re.findall(r'<g class="edge" data-edge="\d+"', html)) == len(data["edges"])
    blob = json.loads(re.search(r'<script type="application/json" id="circuit-edges">(.*?)</script>', html).group(1))
    assert [(e["source"], e["target"]) for e in blob["edges"]] == [(e["source"], e["target"]) for e in data["edges"]]
    assert all(np.allclose(a["kernel"], b["kernel"], atol=1e-6) for a, b in zip(blob["edges"], data["edges"]))
    assert not data["truncated"] and data["limit"] == pages.CIRCUIT_DEFAULTS["limit"]
    first = {(e["source"], e["target"]) for e in data["edges"] if e["target"] == target}
    second = [e for e in data["edges"] if e["target"] != target]
    cut = get(client, f"/api/models/pl/circuit?units=high:0&depth=2&limit={len(first) + 1}").json()
    assert len(cut["edges"]) == len(first) + 1 and cut["truncated"]  # strongest first at each step:
    assert first <= {(e["source"], e["target"]) for e in cut["edges"]}  # all of the first step, and
    extra = [e for e in cut["edges"] if e["target"] != target]  # the strongest of the second
    assert abs(extra[0]["rel_in"]) == pytest.approx(max(abs(e["rel_in"]) for e in second))
    svg = get(client, data["svg_url"])
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.count('class="edge"') == len(data["edges"]) and "/files/" not in svg.text
    # two targets: the union of both circuits
    both = get(client, "/api/models/pl/circuit?units=high:0,high:1&depth=1").json()
    union = nx.compose(_circuit_by_networkx(atlas, "pl", "pl/high:0", 1, 0.3),
                       _circuit_by_networkx(atlas, "pl", "pl/high:1", 1, 0.3))
    assert {(e["source"], e["target"]) for e in both["edges"]} == set(union.edges)


def test_motif_page_orders_the_family_matrix_by_orientation(served):
    atlas, client = served
    motif = atlas.motifs("pl")[0]
    data = get(client, pages.motif_url(motif["uid"]).replace("/motifs/", "/api/motifs/")).json()
    m = data["matrix"]
    assert m is not None and m["kind"] == "direct"
    assert m["row_orientations"] == sorted(m["row_orientations"])
    assert m["col_orientations"] == sorted(m["col_orientations"])
    w = atlas.weights("pl", "mid", "high").sum(axis=(2, 3))
    for i, row in enumerate(m["rows"]):
        for j, col in enumerate(m["cols"]):
            assert m["values"][i][j] == pytest.approx(w[names.parse_unit(row)[1], names.parse_unit(col)[1]], abs=1e-5)
    roles = {role: {x["uid"] for x in members} for role, members in data["roles"].items()}
    assert roles == {role: {x["uid"] for x in motif["members"] if x["role"] == role}
                     for role in {x["role"] for x in motif["members"]}}
    html = get(client, pages.motif_url(motif["uid"])).text
    assert 'class="matrix"' in html


def test_svd_page_tables_count_every_member(served):
    atlas, client = served
    analysis = get(client, "/api/models/t").json()["analyses"][0]["analysis"]
    data = get(client, f"/api/models/t/svd?analysis={analysis}").json()
    for side, table in data["tables"].items():
        counted = {row["cluster"]: sum(row["counts"]) for row in table["rows"]}
        stored = atlas.cypher("MATCH (n:Neuron)-[:IN_CLUSTER]->(c:Cluster {model: 't', analysis: $a, side: $s}) "
                              "RETURN c.index AS i, count(n) AS n", a=analysis, s=side)
        assert counted == {r["i"]: r["n"] for r in stored}
    html = get(client, f"/models/t/svd?analysis={analysis}").text
    assert html.count("<circle") == sum(len(c["members"]) for c in data["clusters"])


def test_console_reads_limits_and_refuses_writes(served):
    atlas, client = served
    data = get(client, "/api/console?q=MATCH (n:Neuron {model: 'pl'}) RETURN n.uid AS uid ORDER BY uid&limit=5").json()
    assert data["columns"] == ["uid"] and len(data["rows"]) == 5 and data["truncated"]
    before = atlas.cypher("MATCH (n) RETURN count(n) AS n")[0]["n"]
    refused = get(client, "/api/console?q=CREATE (:Intruder)", 400).json()
    assert "refused" in refused["error"]
    get(client, "/console?q=MATCH (n) DETACH DELETE n", 400)
    assert atlas.cypher("MATCH (n) RETURN count(n) AS n")[0]["n"] == before
    with pytest.raises(QueryError, match="timed out"):
        pages.console_page(ReadOnlyStore.over(atlas.store),
                           "UNWIND range(1, 200000000) AS x WITH x WHERE x % 7 = 123456789 RETURN count(x)",
                           timeout=0.5)


def test_the_viewer_never_opens_a_write_session(served):
    atlas, _ = served
    store = ReadOnlyStore.over(atlas.store)
    with pytest.raises(QueryError, match="read-only"):
        store.write("CREATE (:Intruder)")
    with pytest.raises(neo4j.exceptions.ClientError, match="read access mode"):  # the server refuses it too
        with store.session(read=True) as session:
            session.execute_read(lambda tx: tx.run("CREATE (:Intruder)").consume())
    assert atlas.cypher("MATCH (n:Intruder) RETURN count(n) AS n")[0]["n"] == 0


def test_bad_ids_are_404_pages_without_tracebacks(served):
    _, client = served
    for url in ("/models/nope", "/models/pl/layers/nope", "/models/pl/layers/mid/999", "/models/pl/layers/mid/x",
                "/motifs/pl/motif/none/0", "/models/t/svd?analysis=none", "/no/such/page",
                "/models/nope/circuit?units=a:1"):
        response = get(client, url, 404)
        assert "Traceback" not in response.text and "<h1>404" in response.text
    assert get(client, "/api/models/nope", 404).json()["status"] == 404
    for url in ("/models/pl/circuit?units=high:0&depth=9", "/models/pl/circuit?units=high:0&min_rel=x",
                "/models/pl/circuit?units=", "/api/console?q=MATCH (n&limit=1"):
        assert "Traceback" not in get(client, url, 400).text


def test_files_only_from_the_artifacts_folder(served, module_artifacts, tmp_path):
    atlas, client = served
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"secret")
    (module_artifacts / "link.png").symlink_to(outside)
    for url in ("/files/../../../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", f"/files/{outside}",
                "/files//etc/passwd", "/files/link.png", "/files/featurevis"):
        response = client.get(url)
        assert response.status_code == 404 and b"secret" not in response.content and b"root:" not in response.content
    atlas.execute("MATCH (n:Neuron {uid: 'pl/mid:1'}) SET n.featurevis = $p", p=str(outside))
    data = get(client, "/api/models/pl/layers/mid").json()
    assert next(u for u in data["units"] if u["channel"] == 1)["featurevis_url"] is None
    assert pages.file_url("../x.png") is None and pages.file_url(str(module_artifacts / "a.png")) == "/files/a.png"


def test_strings_from_the_graph_are_escaped(served):
    atlas, client = served
    atlas.execute("CREATE (:Model {id: $id, arch: $id, status: 'complete'})", id=HOSTILE)
    atlas.execute("MATCH (l:Layer {uid: 'pl/mid'}) SET l.aliases = [$id]", id=HOSTILE)
    atlas.execute("MATCH (n:Neuron {uid: 'pl/mid:2'}) SET n.branch = $id", id=HOSTILE)
    try:
        for url, params in (("/", None), ("/models/pl", None), ("/models/pl/layers/mid", None),
                            ("/console", {"q": f'RETURN "{HOSTILE}" AS x'})):
            response = client.get(url, params=params)
            assert response.status_code == 200, url
            html = response.text
            assert "<script>alert" not in html and "&lt;script&gt;" in html, url
    finally:
        atlas.execute("MATCH (m:Model {id: $id}) DELETE m", id=HOSTILE)
        atlas.execute("MATCH (l:Layer {uid: 'pl/mid'}) REMOVE l.aliases")
        atlas.execute("MATCH (n:Neuron {uid: 'pl/mid:2'}) REMOVE n.branch")


def test_neo4j_down_gives_a_503_that_says_how_to_start_it():
    from circuitatlas.localserver import free_port

    uri = f"bolt://127.0.0.1:{free_port()}"
    store = Store(neo4j.GraphDatabase.driver(uri, auth=("neo4j", "x")), uri=uri)
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        response = client.get("/")
        assert response.status_code == 503 and "circuitatlas db start" in response.text
        assert client.get("/api/models").status_code == 503
    store.close()


def test_token_is_required_when_set(served):
    atlas, _ = served
    client = TestClient(create_app(atlas.store, token="s3cret"), raise_server_exceptions=False)
    assert client.get("/api/models").status_code == 401
    assert client.get("/files/x.png").status_code == 401 and client.get("/static/viewer.css").status_code == 401
    assert client.get("/api/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = client.get("/models/pl?token=s3cret", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/models/pl"
    kept = client.get("/console", params={"q": "RETURN 1 & 2", "token": "s3cret", "limit": "5"}, follow_redirects=False)
    assert kept.headers["location"] == "/console?q=RETURN+1+%26+2&limit=5"  # the rest of the query, intact
    assert client.get("/models/pl").status_code == 200  # the cookie carries it from now on
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_serve_refuses_a_public_address_without_token(cli_env):
    env = {k: v for k, v in cli_env.items()}
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"], env={**env, "CIRCUITATLAS_SERVE_TOKEN": ""})
    assert result.exit_code == 2 and "--token" in result.output


def test_static_files_are_local():
    """Pages must work offline: no script, style sheet or font from another host."""
    folder = Path(pages.__file__).parent
    for file in list((folder / "templates").glob("*.html")) + list((folder / "static").iterdir()):
        text = file.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), file
        assert "@import" not in text and "url(http" not in text, file


def test_kernel_colours_and_circuit_layout():
    svg = drawing.kernel_svg(np.array([[1.0, -1.0], [0.0, 0.5]]))
    fills = re.findall(r'fill="(rgb\([^)]*\))"', svg)
    assert fills[0] == "rgb({},{},{})".format(*drawing.POSITIVE)
    assert fills[1] == "rgb({},{},{})".format(*drawing.NEGATIVE)
    assert fills[2] == "rgb(255,255,255)"
    nodes = {"m/a:0": {"layer": "a", "channel": 0}, "m/a:1": {"layer": "a", "channel": 1},
             "m/b:0": {"layer": "b", "channel": 0}, "m/b:1": {"layer": "b", "channel": 1},
             "m/c:0": {"layer": "c", "channel": 0}}
    edges = [("m/b:1", "m/c:0"), ("m/a:0", "m/b:0"), ("m/a:1", "m/b:1")]
    layout = drawing.layout_circuit(nodes, edges, {"a": 1, "b": 2, "c": 3})
    assert [layer for layer, _ in layout.rows] == ["c", "b", "a"]
    assert layout.rows[2][1] == ["m/a:1", "m/a:0"]  # under the units they feed
    ys = {uid: y for uid, (_, y) in layout.xy.items()}
    assert ys["m/c:0"] < ys["m/b:0"] < ys["m/a:0"]
    xs = sorted(x for uid, (x, _) in layout.xy.items() if uid.startswith("m/a"))
    assert xs[1] - xs[0] >= drawing.TILE  # tiles of a row never overlap



# -- in a real browser: Debian's chromium, driven by Selenium through the system chromedriver ----
BROWSER, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(served):
    """Headless Chromium on the viewer served by uvicorn in a thread; the browser's console log is
    collected on every page."""
    if not (Path(BROWSER).exists() and Path(DRIVER).exists()):
        message = (f"{BROWSER} and {DRIVER} are needed for the browser tests (Debian: apt-get install chromium "
                   "chromium-driver; scripts/test.sh installs them when it can)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import threading

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from circuitatlas.localserver import free_port

    atlas, _ = served
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(atlas.store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        yield driver, f"http://127.0.0.1:{port}"
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)


def _settle(driver, shots: Path, name: str) -> None:
    """Every image loaded, no console error, a full-page screenshot saved."""
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight); window.scrollTo(0, 0);")
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    for _ in range(40):
        if not broken:
            break
        time.sleep(0.1)
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, (name, broken)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, (name, errors)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(max(height, 700), 4000))
    shots.mkdir(exist_ok=True)
    driver.save_screenshot(str(shots / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def test_browser_clicks_from_models_to_a_circuit_and_a_motif(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    atlas, client = served
    driver, base = browser
    shots = tmp_path / "screenshots"
    driver.get(base + "/")
    _settle(driver, shots, "models")
    driver.find_element(By.LINK_TEXT, "pl").click()
    assert driver.current_url.endswith("/models/pl")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.layers tbody tr")
    assert len(rows) == len(atlas.layers("pl"))
    _settle(driver, shots, "model")

    driver.find_element(By.LINK_TEXT, "mid").click()
    tiles = driver.find_elements(By.CSS_SELECTOR, "#tiles .tile")
    assert len(tiles) == len(atlas.cypher("MATCH (n:Neuron {model: 'pl', layer: 'mid'}) RETURN n"))
    _settle(driver, shots, "layer")
    family = [m for m in atlas.motifs("pl") if m["kind"] == "rotation_equivariance"][0]
    in_mid = {x["uid"] for x in family["members"] if "/mid:" in x["uid"]}
    Select(driver.find_element(By.NAME, "motif")).select_by_value("rotation_equivariance")
    visible = [t for t in driver.find_elements(By.CSS_SELECTOR, "#tiles .tile") if t.is_displayed()]
    assert {t.get_attribute("title") for t in visible} == in_mid
    assert "motif=rotation_equivariance" in driver.current_url  # the filtered view is a URL to share
    selectivity = {r["uid"]: r["s"] for r in atlas.cypher(
        "MATCH (n:Neuron {model: 'pl', layer: 'mid'}) RETURN n.uid AS uid, n.orientation_selectivity AS s")}
    box = driver.find_element(By.NAME, "selectivity")
    threshold = math.floor(max(selectivity.values()) * 100) / 100
    for given, expected in ((threshold + 0.01, set()),
                            (threshold, {u for u, v in selectivity.items() if v >= threshold and u in in_mid})):
        box.clear()
        box.send_keys(f"{given:.2f}")
        visible = [t for t in driver.find_elements(By.CSS_SELECTOR, "#tiles .tile") if t.is_displayed()]
        assert {t.get_attribute("title") for t in visible} == expected
        assert f"selectivity={given:.2f}" in driver.current_url
    box.clear()
    driver.execute_script("arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", box)
    Select(driver.find_element(By.NAME, "sort")).select_by_value("selectivity")
    shown = [float(t.get_attribute("data-selectivity")) for t in driver.find_elements(By.CSS_SELECTOR, "#tiles .tile")
             if t.is_displayed()]
    assert shown == sorted(shown, reverse=True)

    target = sorted(in_mid)[0]
    driver.find_element(By.CSS_SELECTOR, f'#tiles .tile[title="{target}"]').click()
    assert driver.current_url.endswith(pages.neuron_url(target))
    assert driver.find_elements(By.CSS_SELECTOR, "svg.polar polygon")
    _settle(driver, shots, "neuron")

    driver.find_element(By.PARTIAL_LINK_TEXT, "Circuit above").click()
    expected = client.get(f"/api/models/pl/circuit?units={target.split('/')[1]}").json()
    edges = driver.find_elements(By.CSS_SELECTOR, ".diagram g.edge")
    assert len(edges) == len(expected["edges"]) > 0
    assert len(driver.find_elements(By.CSS_SELECTOR, ".diagram .unit")) == len(expected["nodes"])
    images = driver.find_elements(By.CSS_SELECTOR, ".diagram .unit image")
    assert len(images) == sum(1 for n in expected["nodes"] if n["featurevis_url"]) > 0
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", edges[0])
    shown_detail = [d for d in driver.find_elements(By.CSS_SELECTOR, ".edge-detail") if d.is_displayed()]
    assert len(shown_detail) == 1 and shown_detail[0].find_elements(By.CSS_SELECTOR, "svg.kernel rect")
    _settle(driver, shots, "circuit")
    slider = driver.find_element(By.ID, "min-rel")
    driver.execute_script("arguments[0].value = '0.6'; "
                          "arguments[0].dispatchEvent(new Event('change', {bubbles: true}))", slider)
    for _ in range(50):
        if "min_rel=0.6" in driver.current_url:
            break
        time.sleep(0.1)
    stricter = client.get(f"/api/models/pl/circuit?units={target.split('/')[1]}&min_rel=0.6").json()
    assert len(driver.find_elements(By.CSS_SELECTOR, ".diagram g.edge")) == len(stricter["edges"]) <= len(edges)

    driver.get(base + pages.neuron_url(target))
    driver.find_element(By.PARTIAL_LINK_TEXT, "rotation equivariance").click()
    matrix = client.get(pages.motif_url(family["uid"]).replace("/motifs/", "/api/motifs/")).json()
    expected_matrix = matrix["matrix"]
    cells = driver.find_elements(By.CSS_SELECTOR, "svg.matrix rect")
    assert len(cells) == len(expected_matrix["rows"]) * len(expected_matrix["cols"])
    _settle(driver, shots, "motif")
    driver.get(base + "/console?q=" + "MATCH (n:Neuron {model: 'pl'}) RETURN n.uid AS uid LIMIT 3")
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.console-rows tbody tr")) == 3
    _settle(driver, shots, "console")
    assert len(list(shots.glob("*.png"))) == 7
