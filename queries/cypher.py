"""Every Cypher query circuitatlas runs, in one place and always parameterised.

Values travel as parameters; the only text ever formatted into a query is a label
or relationship type from this module's own constants (and :mod:`circuitatlas.names`).
"""

from __future__ import annotations

from circuitatlas.names import EDGE_TYPES

# Labels that carry a ``model`` property and belong to one model's subgraph, deleted by ``drop``.
MODEL_LABELS = ("Neuron", "Layer", "Cluster", "Motif")

SCHEMA = (
    "CREATE CONSTRAINT model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT layer_uid IF NOT EXISTS FOR (l:Layer) REQUIRE l.uid IS UNIQUE",
    "CREATE CONSTRAINT neuron_uid IF NOT EXISTS FOR (n:Neuron) REQUIRE n.uid IS UNIQUE",
    "CREATE CONSTRAINT cluster_uid IF NOT EXISTS FOR (c:Cluster) REQUIRE c.uid IS UNIQUE",
    "CREATE CONSTRAINT motif_uid IF NOT EXISTS FOR (m:Motif) REQUIRE m.uid IS UNIQUE",
    "CREATE INDEX neuron_model_layer IF NOT EXISTS FOR (n:Neuron) ON (n.model, n.layer)",
    "CREATE INDEX layer_model IF NOT EXISTS FOR (l:Layer) ON (l.model)",
    "CREATE INDEX cluster_analysis IF NOT EXISTS FOR (c:Cluster) ON (c.model, c.analysis)",
)

LIST_MODELS = """
MATCH (m:Model)
CALL (m) {
  MATCH (n:Neuron {model: m.id})
  RETURN count(n) AS neurons,
         sum(COUNT { (n)-[:WEIGHT]->() }) AS weight_edges,
         sum(COUNT { (n)-[:EXPANDED]->() }) AS expanded_edges
}
RETURN m.id AS id, m.arch AS arch, m.source AS source, m.weights AS weights, m.status AS status,
       toString(m.created) AS created, COUNT { (m)-[:HAS_LAYER]->() } AS layers,
       neurons, weight_edges, expanded_edges, m.ingest_path AS ingest_path
ORDER BY id
"""

ANY_NODE = "MATCH (n) RETURN 1 AS found LIMIT 1"

MODEL_EXISTS = "MATCH (m:Model {id: $model}) RETURN m.status AS status"

MARK_MODEL_STATUS = "MATCH (m:Model {id: $model}) SET m.status = $status"


def delete_model_edges(rel_type: str) -> str:
    """Delete one model's edges of a type in server-side batches (auto-commit only)."""
    assert rel_type in EDGE_TYPES
    return (
        f"MATCH (:Neuron {{model: $model}})-[r:{rel_type}]->() "
        "CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS"
    )


def delete_model_nodes(label: str) -> str:
    """Delete one model's nodes of a label in server-side batches (auto-commit only)."""
    assert label in MODEL_LABELS
    return f"MATCH (n:{label} {{model: $model}}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF $batch ROWS"


def delete_incoming_edges(rel_type: str) -> str:
    """Delete the edges of a type that end in one layer's neurons (a part to redo on resume)."""
    assert rel_type in EDGE_TYPES
    return (
        f"MATCH (:Neuron {{model: $model, layer: $layer}})<-[r:{rel_type}]-() "
        "CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS"
    )


DELETE_MODEL_NODE = "MATCH (m:Model {id: $model}) DETACH DELETE m"

DELETE_EVERYTHING = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch ROWS"

SERVER_COMPONENTS = "CALL dbms.components() YIELD name, versions, edition RETURN name, versions[0] AS version, edition"

# -- ingest -------------------------------------------------------------------------------------
CREATE_MODEL = """
CREATE (m:Model {id: $model, arch: $arch, source: $source, weights: $weights, status: 'ingesting',
                 created: datetime(), input_size: $input_size, observation_layers: $observation_layers,
                 plan: $plan, parts_done: []})
"""

MODEL_PLAN = "MATCH (m:Model {id: $model}) RETURN m.status AS status, m.plan AS plan, m.parts_done AS parts_done"

CREATE_LAYERS = """
MATCH (m:Model {id: $model})
UNWIND $rows AS row
CREATE (l:Layer {uid: row.uid, model: $model, name: row.name, kind: row.kind, channels: row.channels,
                 order: row.order, shape: row.shape, observed: row.observed, folded_bn: row.folded_bn})
CREATE (m)-[:HAS_LAYER]->(l)
"""

CREATE_NEURONS = """
UNWIND $rows AS row
MATCH (l:Layer {uid: $model + '/' + row.layer})
CREATE (n:Neuron {uid: row.uid, model: $model, layer: row.layer, channel: row.channel, bias: row.bias,
                  branch: row.branch})
CREATE (l)-[:HAS_NEURON]->(n)
"""

CREATE_FEEDS = """
UNWIND $rows AS row
MATCH (a:Layer {uid: row.src}), (b:Layer {uid: row.dst})
CREATE (a)-[:FEEDS {kind: row.kind}]->(b)
"""


def create_edges(rel_type: str) -> str:
    """Edges grouped by target neuron, endpoints by element id:
    ``row = {d: eid, s: [eid...], k: [kh*kw floats per edge, concatenated], n: kh*kw, kh, kw,
    sum: [...], l1: [...], l2: [...], max: [...], min: [...]}``."""
    assert rel_type in EDGE_TYPES
    return f"""
UNWIND $rows AS row
MATCH (b) WHERE elementId(b) = row.d
UNWIND range(0, size(row.s) - 1) AS i
MATCH (a) WHERE elementId(a) = row.s[i]
CREATE (a)-[:{rel_type} {{kernel: row.k[i * row.n..(i + 1) * row.n], kh: row.kh, kw: row.kw, sum: row.sum[i],
                        l1: row.l1[i], l2: row.l2[i], max: row.max[i], min: row.min[i]}}]->(b)
"""


NEURON_IDS = "MATCH (n:Neuron {model: $model, layer: $layer}) RETURN n.channel AS channel, elementId(n) AS id"


SET_MODEL_PROPERTIES = "MATCH (m:Model {id: $model}) SET m += $props"

MODEL_META = "MATCH (m:Model {id: $model}) RETURN properties(m) AS meta"

SET_NEURON_PROPERTIES = """
UNWIND $rows AS row
MATCH (n:Neuron {uid: row.uid})
SET n += row.props
"""

MARK_PART_DONE = "MATCH (m:Model {id: $model}) SET m.parts_done = m.parts_done + [$part]"

MARK_COMPLETE = "MATCH (m:Model {id: $model}) SET m.status = 'complete', m.completed = datetime()"

def read_edges(rel_type: str) -> str:
    """One row per target neuron with all its inputs from one source layer (fewer, larger rows
    decode several times faster than one row per edge)."""
    assert rel_type in EDGE_TYPES
    return f"""
MATCH (b:Neuron {{model: $model, layer: $dst}})<-[r:{rel_type}]-(a:Neuron)
WHERE a.layer = $src AND a.model = $model
RETURN b.channel AS dst, collect(a.channel) AS src, collect(r.kernel) AS kernels, min(r.kh) AS kh, min(r.kw) AS kw
"""


EDGE_STATS = ("sum", "l1", "l2", "max", "min")


def read_edge_stat(rel_type: str, stat: str) -> str:
    """Like :func:`read_edges` but one number per edge (``sum``, ``l1``...): SVD needs ``l1``,
    the motif detectors ``sum``; far less to move than whole kernels."""
    assert rel_type in EDGE_TYPES and stat in EDGE_STATS
    return f"""
MATCH (b:Neuron {{model: $model, layer: $dst}})<-[r:{rel_type}]-(a:Neuron)
WHERE a.layer = $src AND a.model = $model
RETURN b.channel AS dst, collect(a.channel) AS src, collect(r.{stat}) AS value
"""


LAYER_INFO = "MATCH (l:Layer {uid: $uid}) RETURN l.channels AS channels, l.kind AS kind, l.shape AS shape"

MODEL_LAYERS = """
MATCH (:Model {id: $model})-[:HAS_LAYER]->(l:Layer)
WHERE NOT $observed OR l.observed
RETURN l.name AS name, l.kind AS kind, l.order AS order, l.channels AS channels, l.shape AS shape,
       l.observed AS observed, l.featurevis_sheet AS featurevis_sheet
ORDER BY l.order
"""

# -- subgraphs -----------------------------------------------------------------------------------
SUBGRAPH = """
CALL () {
  MATCH (n:Neuron {model: $model}) WHERE n.layer IN $layers
  RETURN 'node' AS what, properties(n) AS props, null AS src, null AS dst, null AS edge
  UNION ALL
  MATCH (a:Neuron {model: $model})-[r]->(b:Neuron {model: $model})
  WHERE type(r) = $rel_type AND a.layer IN $layers AND b.layer IN $layers AND r.l2 >= $min_l2
  WITH b, a, r ORDER BY r.l2 DESC
  WITH b, collect({src: a.uid, edge: properties(r)}) AS incoming
  UNWIND incoming[0..coalesce($top_k, size(incoming))] AS e
  RETURN 'edge' AS what, null AS props, e.src AS src, b.uid AS dst, e.edge AS edge
}
RETURN what, props, src, dst, edge
"""

LAYER_NEURONS = """
MATCH (n:Neuron {model: $model, layer: $layer})
RETURN n.channel AS channel, n.uid AS uid, n.branch AS branch ORDER BY channel
"""

# -- analysis write-back -------------------------------------------------------------------------
DELETE_ANALYSIS = "MATCH (c:Cluster {model: $model, analysis: $analysis}) DETACH DELETE c"

CREATE_CLUSTERS = """
UNWIND $rows AS row
CREATE (:Cluster {uid: row.uid, model: $model, method: $method, analysis: $analysis, k: $k, side: row.side,
                  index: row.index, size: row.size, src_layer: $src, dst_layer: $dst, params: $params})
"""

_SVD_SIDES = {"input": ("svd_in", "cluster_in", "svd_in_analysis"),
              "output": ("svd_out", "cluster_out", "svd_out_analysis")}


def assign_clusters(side: str) -> str:
    """Coordinates and cluster ids onto neurons of one side, and their IN_CLUSTER edges."""
    coords, cluster, analysis = _SVD_SIDES[side]
    return f"""
UNWIND $rows AS row
MATCH (n:Neuron {{uid: row.uid}})
MATCH (c:Cluster {{uid: row.cluster}})
SET n.{coords} = row.coords, n.{cluster} = row.index, n.{analysis} = $analysis
CREATE (n)-[:IN_CLUSTER {{side: '{side}'}}]->(c)
"""

# -- feature visualisation -----------------------------------------------------------------------
FEATUREVIS_KEYS = "MATCH (n:Neuron {model: $model, layer: $layer}) RETURN n.channel AS c, n.featurevis_key AS k"

FEATUREVIS_PATHS = """
MATCH (n:Neuron {model: $model, layer: $layer}) WHERE n.featurevis IS NOT NULL
RETURN n.channel AS c, n.featurevis AS path ORDER BY c
"""

SET_LAYER_SHEET = "MATCH (l:Layer {uid: $uid}) SET l.featurevis_sheet = $sheet"

# -- motifs --------------------------------------------------------------------------------------
DELETE_MOTIFS = "MATCH (m:Motif {model: $model, run: $run}) DETACH DELETE m"

CREATE_MOTIFS = """
UNWIND $rows AS row
CREATE (m:Motif {uid: row.uid, kind: row.kind, model: $model, run: $run, score: row.score, p_value: row.p_value,
                 params: row.params, layers: row.layers})
WITH m, row
UNWIND row.members AS member
MATCH (n:Neuron {uid: member.uid})
CREATE (n)-[:IN_MOTIF {role: member.role, orientation: member.orientation}]->(m)
"""

LIST_MOTIFS = """
MATCH (m:Motif {model: $model})
OPTIONAL MATCH (n:Neuron)-[r:IN_MOTIF]->(m)
WITH m, n, r ORDER BY n.uid
RETURN m.uid AS uid, m.kind AS kind, m.score AS score, m.p_value AS p_value, m.layers AS layers,
       m.params AS params, collect({uid: n.uid, role: r.role, orientation: r.orientation}) AS members
ORDER BY kind, score DESC
"""

LAYER_TUNING = """
MATCH (n:Neuron {model: $model, layer: $layer})
RETURN n.channel AS channel, n.orientation AS orientation, n.orientation_selectivity AS selectivity,
       n.tuning AS tuning, n.tuning_angles AS angles
ORDER BY channel
"""
