"""Every Cypher query circuitatlas runs, in one place and always parameterised.

Values travel as parameters; the only text ever formatted into a query is a label
or relationship type from this module's own constants (and :mod:`circuitatlas.names`).
"""

from __future__ import annotations

from circuitatlas.names import EDGE_TYPES

# Labels that carry a ``model`` property and belong to one model's subgraph, deleted by ``drop``.
MODEL_LABELS = ("Neuron", "Layer", "Cluster", "Motif", "MotifRun", "Edit")

SCHEMA = (
    "CREATE CONSTRAINT model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT layer_uid IF NOT EXISTS FOR (l:Layer) REQUIRE l.uid IS UNIQUE",
    "CREATE CONSTRAINT neuron_uid IF NOT EXISTS FOR (n:Neuron) REQUIRE n.uid IS UNIQUE",
    "CREATE CONSTRAINT cluster_uid IF NOT EXISTS FOR (c:Cluster) REQUIRE c.uid IS UNIQUE",
    "CREATE CONSTRAINT motif_uid IF NOT EXISTS FOR (m:Motif) REQUIRE m.uid IS UNIQUE",
    "CREATE CONSTRAINT motif_run_uid IF NOT EXISTS FOR (r:MotifRun) REQUIRE r.uid IS UNIQUE",
    "CREATE CONSTRAINT edit_uid IF NOT EXISTS FOR (e:Edit) REQUIRE e.uid IS UNIQUE",
    "CREATE INDEX neuron_model_layer IF NOT EXISTS FOR (n:Neuron) ON (n.model, n.layer)",
    "CREATE INDEX neuron_model IF NOT EXISTS FOR (n:Neuron) ON (n.model)",  # pattern search starts here
    "CREATE INDEX layer_model IF NOT EXISTS FOR (l:Layer) ON (l.model)",
    "CREATE INDEX cluster_analysis IF NOT EXISTS FOR (c:Cluster) ON (c.model, c.analysis)",
    # "edges with at least 30% of the strongest", as the Circuits figures are drawn: one indexed filter
    *(f"CREATE INDEX {t.lower()}_{side} IF NOT EXISTS FOR ()-[r:{t}]-() ON (r.{side})"
      for t in EDGE_TYPES for side in ("rel_in", "rel_out")),
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


DELETE_EVERYTHING = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch ROWS"

# a store's own running transactions (tagged by it with metadata), and ending them
OWN_TRANSACTIONS = """
SHOW TRANSACTIONS YIELD transactionId AS id, metaData
WHERE metaData.circuitatlas = $tag RETURN id
"""
TERMINATE_TRANSACTIONS = "TERMINATE TRANSACTIONS $ids"

SERVER_COMPONENTS = "CALL dbms.components() YIELD name, versions, edition RETURN name, versions[0] AS version, edition"

# -- ingest -------------------------------------------------------------------------------------
# -- model lifecycle (circuitatlas/lifecycle.py): states, one writer at a time, the final check ---
# the Model node of a new ingest, created with its writer's lock; an id that exists is matched, not
# changed (MERGE under the uniqueness constraint: of two racing creators one creates, one matches)
CREATE_MODEL = """
MERGE (m:Model {id: $model})
ON CREATE SET m += $props, m.status = 'ingesting', m.created = datetime(), m.parts_done = [], m.part_edges = [],
              m.lock_owner = $owner, m.lock_op = $op, m.lock_heartbeat = timestamp()
RETURN coalesce(m.lock_owner = $owner, false) AS ours, m.status AS status, m.lock_owner AS holder, m.lock_op AS op,
       timestamp() - m.lock_heartbeat AS age_ms
"""

# the node's write lock first (a property set and removed), then the lock's fields read: two racing
# takers are serialised and the second sees the first's owner
TAKE_MODEL_LOCK = """
MATCH (m:Model {id: $model})
SET m.lock_probe = true
REMOVE m.lock_probe
WITH m, m.lock_owner AS holder, timestamp() - m.lock_heartbeat AS age_ms
WITH m, holder, age_ms, holder IS NULL OR holder = $owner OR holder IN $dead OR age_ms > $stale_ms AS free
FOREACH (_ IN CASE WHEN free THEN [1] ELSE [] END |
  SET m.lock_owner = $owner, m.lock_op = $op, m.lock_heartbeat = timestamp())
RETURN free AS ours, holder, m.lock_op AS op, age_ms, m.status AS status, m.plan AS plan, m.parts_done AS parts_done
"""

MODEL_LOCK = """
MATCH (m:Model {id: $model})
RETURN m.lock_owner AS holder, m.lock_op AS op, timestamp() - m.lock_heartbeat AS age_ms, m.status AS status
"""

LOCK_HEARTBEAT = "MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner SET m.lock_heartbeat = timestamp()"

RELEASE_MODEL_LOCK = """
MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner REMOVE m.lock_owner, m.lock_op, m.lock_heartbeat
"""

# a model's status changed by its lock's owner only (0 properties set: the lock was lost)
SET_LOCKED_STATUS = "MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner SET m.status = $status"

# a replace keeps the Model node (and its lock) and starts it again as a new ingest
RESTART_MODEL = """
MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner
SET m = $props, m.id = $model, m.status = 'ingesting', m.created = datetime(), m.parts_done = [],
    m.part_edges = [], m.lock_owner = $owner, m.lock_op = $op, m.lock_heartbeat = timestamp()
"""

DELETE_LOCKED_MODEL_NODE = "MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner DETACH DELETE m"

# a part committed, with the edges it wrote (the final check compares them with the graph)
MARK_PART_DONE = """
MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner
SET m.parts_done = m.parts_done + [$part], m.part_edges = coalesce(m.part_edges, []) + [$edges]
"""

# parts that disagree with the graph, recorded as not done (a resume writes them again)
UNMARK_PARTS = """
MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner
WITH m, [i IN range(0, size(m.parts_done) - 1) WHERE NOT m.parts_done[i] IN $parts] AS keep
SET m.parts_done = [i IN keep | m.parts_done[i]], m.part_edges = [i IN keep | m.part_edges[i]]
"""

MARK_COMPLETE = """
MATCH (m:Model {id: $model}) WHERE m.lock_owner = $owner SET m.status = 'complete', m.completed = datetime()
"""

MODEL_RECORD = "MATCH (m:Model {id: $model}) RETURN m.parts_done AS parts_done, m.part_edges AS part_edges"

# what the graph holds of a model, layer by layer, for the final check
MODEL_COUNTS = """
MATCH (m:Model {id: $model})
CALL (m) { MATCH (m)-[:HAS_LAYER]->(l:Layer) RETURN collect(l.name) AS layers }
CALL (m) {
  MATCH (n:Neuron {model: m.id})
  WITH n.layer AS layer, count(n) AS neurons, sum(COUNT { (:Layer)-[:HAS_NEURON]->(n) }) AS owned,
       sum(COUNT { (n)<-[:WEIGHT]-() }) AS weight, sum(COUNT { (n)<-[:EXPANDED]-() }) AS expanded
  RETURN collect({layer: layer, neurons: neurons, owned: owned, WEIGHT: weight, EXPANDED: expanded}) AS counts
}
RETURN layers, counts
"""

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
    sum: [...], l1: [...], l2: [...], max: [...], min: [...], rel_in: [...], rel_out: [...]}``."""
    assert rel_type in EDGE_TYPES
    return f"""
UNWIND $rows AS row
MATCH (b) WHERE elementId(b) = row.d
UNWIND range(0, size(row.s) - 1) AS i
MATCH (a) WHERE elementId(a) = row.s[i]
CREATE (a)-[:{rel_type} {{kernel: row.k[i * row.n..(i + 1) * row.n], kh: row.kh, kw: row.kw, sum: row.sum[i],
                        l1: row.l1[i], l2: row.l2[i], max: row.max[i], min: row.min[i],
                        rel_in: row.rel_in[i], rel_out: row.rel_out[i]}}]->(b)
"""


NEURON_IDS = "MATCH (n:Neuron {model: $model, layer: $layer}) RETURN n.channel AS channel, elementId(n) AS id"


SET_MODEL_PROPERTIES = "MATCH (m:Model {id: $model}) SET m += $props"

MODEL_META = "MATCH (m:Model {id: $model}) RETURN properties(m) AS meta"

SET_NEURON_PROPERTIES = """
UNWIND $rows AS row
MATCH (n:Neuron {uid: row.uid})
SET n += row.props
"""


def read_edges(rel_type: str) -> str:
    """One row per target neuron with all its inputs from one source layer (fewer, larger rows
    decode several times faster than one row per edge)."""
    assert rel_type in EDGE_TYPES
    return f"""
MATCH (b:Neuron {{model: $model, layer: $dst}})<-[r:{rel_type}]-(a:Neuron)
WHERE a.layer = $src AND a.model = $model
RETURN b.channel AS dst, collect(a.channel) AS src, collect(r.kernel) AS kernels, min(r.kh) AS kh, min(r.kw) AS kw
"""


EDGE_STATS = ("sum", "l1", "l2", "max", "min", "rel_in", "rel_out")


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
       l.observed AS observed, l.featurevis_sheet AS featurevis_sheet, coalesce(l.aliases, []) AS aliases
ORDER BY l.order
"""

# -- layer aliases -------------------------------------------------------------------------------
SET_LAYER_ALIASES = """
UNWIND $rows AS row
MATCH (l:Layer {uid: row.uid})
SET l.aliases = row.aliases
"""

LAYER_BY_ALIAS = """
MATCH (:Model {id: $model})-[:HAS_LAYER]->(l:Layer)
WHERE $alias IN l.aliases
RETURN l.name AS name ORDER BY l.order
"""

LAYERS_BY_ALIAS = """
UNWIND $pairs AS pair
MATCH (:Model {id: pair.model})-[:HAS_LAYER]->(l:Layer)
WHERE pair.layer IN l.aliases
WITH pair, l ORDER BY l.order
RETURN pair.model AS model, pair.layer AS alias, head(collect(l.name)) AS name
"""

LAYER_NAMES = """
MATCH (:Model {id: $model})-[:HAS_LAYER]->(l:Layer)
RETURN l.name AS name, coalesce(l.aliases, []) AS aliases ORDER BY l.order
"""

NEURON_PROPERTIES = "MATCH (n:Neuron {uid: $uid}) RETURN properties(n) AS props"

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

SET_LAYER_BATTERY = "MATCH (l:Layer {uid: $uid}) SET l.probe_battery = $battery, l.probe = $probe"

LAYER_BATTERY = """
MATCH (l:Layer {uid: $uid})
OPTIONAL MATCH (l)-[:HAS_NEURON]->(n:Neuron)
RETURN l.probe_battery AS battery, collect([n.channel, n.probe_responses]) AS channels
"""

# -- motifs --------------------------------------------------------------------------------------
DELETE_MOTIFS = "MATCH (m:Motif {model: $model, run: $run}) DETACH DELETE m"

CREATE_MOTIFS = """
UNWIND $rows AS row
CREATE (m:Motif {uid: row.uid, kind: row.kind, model: $model, run: $run, score: row.score, p_value: row.p_value,
                 params: row.params, layers: row.layers})
WITH m, row
UNWIND row.members AS member
MATCH (n:Neuron {uid: member.uid})
CREATE (n)-[:IN_MOTIF {role: member.role, orientation: member.orientation, fit: member.fit,
                     fit_without_strongest: member.fit_without_strongest, fit_p: member.fit_p}]->(m)
"""

MERGE_MOTIF_RUN = """
MERGE (r:MotifRun {uid: $uid})
SET r.model = $model, r.run = $run, r.kind = $kind, r.layers = $layers, r.found = $found,
    r.diagnostics = $diagnostics, r.at = datetime()
"""

MOTIF_RUNS = """
MATCH (r:MotifRun {model: $model})
RETURN r.uid AS uid, r.kind AS kind, r.layers AS layers, r.found AS found, r.diagnostics AS diagnostics,
       toString(r.at) AS at
ORDER BY r.at DESC
"""

LIST_MOTIFS = """
MATCH (m:Motif {model: $model})
OPTIONAL MATCH (n:Neuron)-[r:IN_MOTIF]->(m)
WITH m, n, r ORDER BY n.uid
RETURN m.uid AS uid, m.kind AS kind, m.score AS score, m.p_value AS p_value, m.layers AS layers,
       m.params AS params, collect({uid: n.uid, role: r.role, orientation: r.orientation, fit: r.fit,
                                    fit_p: r.fit_p}) AS members
ORDER BY kind, score DESC
"""

LAYER_TUNING = """
MATCH (n:Neuron {model: $model, layer: $layer})
RETURN n.channel AS channel, n.orientation AS orientation, n.orientation_selectivity AS selectivity,
       n.tuning AS tuning, n.tuning_angles AS angles
ORDER BY channel
"""

# -- query API (queries/connectivity.py) ---------------------------------------------------------
# The conditions formatted in here come from queries.criteria.where (our own variable names, every
# value a parameter) and the relationship types from names.rel_type.

UNIT_COLUMNS = ".uid, .model, .layer, .channel, .branch, .orientation"


def unit_map(var: str) -> str:
    """A neuron as one row of a units table (a map projection)."""
    return f"{var} {{{UNIT_COLUMNS}, selectivity: {var}.orientation_selectivity}}"


def strongest_input(rel_type: str, var: str) -> str:
    """A subquery that binds ``<var>_in``: the largest |sum| among ``var``'s inputs of a type (0
    when it has none): read off any one input as |sum| / rel_in, the stored relative strength."""
    assert rel_type in EDGE_TYPES
    return (f"CALL ({var}) {{ OPTIONAL MATCH ()-[z:{rel_type}]->({var}) WHERE z.rel_in > 0 "
            f"WITH z LIMIT 1 RETURN coalesce(abs(z.sum) / z.rel_in, 0.0) AS {var}_in }}")


def _signed(r: str, side: str) -> str:
    """The signed relative strength of edge ``r`` from its stored, unsigned ``rel_in``/``rel_out``."""
    return f"sign({r}.sum) * {r}.{side}"


# ``$sign``: 1 keeps excitatory edges, -1 inhibitory ones, 0 both
_SIGN = "($sign = 0 OR {r}.sum * $sign > 0)"


def units_query(where: str) -> str:
    return f"MATCH (n:Neuron) WHERE {where}\nRETURN {unit_map('n')} AS unit\nORDER BY unit.model, unit.layer, unit.channel LIMIT $limit"


def adjacency_query(rel_type: str, source_where: str, target_where: str, kernels: bool) -> str:
    """Edges from neurons meeting ``source_where`` (variable ``a``) to neurons meeting
    ``target_where`` (``b``) with |sum| >= $min_abs and |rel_in| >= $min_rel, strongest first,
    as one row of aligned columns (a record per edge costs the driver more than the edge), with
    both ends' unit rows once each (one round trip for the three tables)."""
    assert rel_type in EDGE_TYPES
    kernel = ", collect(r.kernel) AS kernel, collect(r.kh) AS kh, collect(r.kw) AS kw" if kernels else ""
    return f"""
MATCH (a:Neuron)-[r:{rel_type}]->(b:Neuron)
WHERE {source_where} AND {target_where} AND abs(r.sum) >= $min_abs AND r.rel_in >= $min_rel
      AND {_SIGN.format(r='r')}
WITH a, b, r ORDER BY abs(r.sum) DESC, a.uid, b.uid LIMIT $limit
WITH collect(a.uid) AS source, collect(b.uid) AS target, collect(r.sum) AS sum, collect(r.l2) AS l2,
     collect({_signed('r', 'rel_in')}) AS rel_in, collect({_signed('r', 'rel_out')}) AS rel_out{kernel},
     collect(DISTINCT a) AS a_units, collect(DISTINCT b) AS b_units
RETURN source, target, sum, l2, rel_in, rel_out{", kernel, kh, kw" if kernels else ""},
       [a IN a_units | {unit_map('a')}] AS source_units, [b IN b_units | {unit_map('b')}] AS target_units
"""


def common_query(rel_type: str, where: str, side: str) -> str:
    """Partners ``p`` of the neurons meeting ``where`` (``u``): inputs (``p -> u``, strength over
    u's strongest input) or outputs (``u -> p``, over u's strongest output), each at least
    $min_rel of it, shared by at least $min_shared of them (all when null)."""
    assert rel_type in EDGE_TYPES and side in ("inputs", "outputs")
    pattern = f"(p)-[r:{rel_type}]->(u)" if side == "inputs" else f"(u)-[r:{rel_type}]->(p)"
    rel = "rel_in" if side == "inputs" else "rel_out"
    return f"""
MATCH (u:Neuron) WHERE {where}
WITH collect(u) AS units
WITH units, coalesce($min_shared, size(units)) AS needed
UNWIND units AS u
MATCH {pattern}
WHERE r.sum <> 0 AND r.{rel} >= $min_rel AND {_SIGN.format(r='r')}
WITH p, needed, collect({{unit: u.uid, sum: r.sum, rel: {_signed('r', rel)}}}) AS links
WHERE size(links) >= needed
WITH p, links, reduce(s = 0.0, link IN links | s + abs(link.rel)) AS strength
RETURN {unit_map('p')} AS unit, links, strength
ORDER BY size(links) DESC, strength DESC, unit.uid LIMIT $limit
"""


def profile_query(rel_type: str, side: str) -> str:
    """One neuron's weight profile: its partners (element ids) with each edge's sum and kernel."""
    assert rel_type in EDGE_TYPES and side in ("inputs", "outputs")
    pattern = f"(x)<-[r:{rel_type}]-(p)" if side == "inputs" else f"(x)-[r:{rel_type}]->(p)"
    return f"""
MATCH (x:Neuron {{uid: $uid}})
OPTIONAL MATCH {pattern}
RETURN x.model AS model, x.layer AS layer, elementId(p) AS partner, r.sum AS sum, r.kernel AS kernel
"""


def unit_profile_size(rel_type: str, side: str) -> str:
    """What :mod:`~circuitatlas.queries.profiles` needs to know of neuron $uid before reading its
    layer's profiles: its model, layer and layer's channel count, the model's completion time
    (none until it is complete), and its partners on ``side`` with their largest kernel."""
    assert rel_type in EDGE_TYPES and side in ("inputs", "outputs")
    pattern = f"(x)<-[r:{rel_type}]-()" if side == "inputs" else f"(x)-[r:{rel_type}]->()"
    return f"""
MATCH (x:Neuron {{uid: $uid}})
OPTIONAL MATCH (m:Model {{id: x.model}})-[:HAS_LAYER]->(l:Layer {{name: x.layer}})
CALL (x) {{ OPTIONAL MATCH {pattern} RETURN count(r) AS partners, max(r.kh * r.kw) AS cells }}
RETURN x.model AS model, x.layer AS layer, l.channels AS channels, partners, coalesce(cells, 1) AS cells,
       CASE WHEN m.status = 'complete' THEN toString(m.completed) END AS completed
"""


def layer_profiles_query(rel_type: str, side: str, kernels: bool) -> str:
    """Each neuron of layer $layer of model $model by channel, with its partners on ``side``
    (uids), each edge's ``sum`` (or flat ``kernel``) and kernel shape, aligned."""
    assert rel_type in EDGE_TYPES and side in ("inputs", "outputs")
    pattern = f"(y)<-[r:{rel_type}]-(p)" if side == "inputs" else f"(y)-[r:{rel_type}]->(p)"
    return f"""
MATCH (y:Neuron {{model: $model, layer: $layer}})
OPTIONAL MATCH {pattern}
WITH y, collect(p.uid) AS partners, collect({"r.kernel" if kernels else "r.sum"}) AS values,
     collect(CASE WHEN r IS NOT NULL THEN [r.kh, r.kw] END) AS shapes
RETURN {unit_map("y")} AS unit, partners, values, shapes
ORDER BY y.channel
"""


def similar_query(rel_type: str, side: str, kernels: bool) -> str:
    """Cosine of each other neuron of a layer with the profile $profile (partner element id ->
    sum, or kernel list), over aligned partners, in one pass over the layer's edges; $norm is
    the profile's norm."""
    assert rel_type in EDGE_TYPES and side in ("inputs", "outputs")
    pattern = f"(y)<-[r:{rel_type}]-(p)" if side == "inputs" else f"(y)-[r:{rel_type}]->(p)"
    if kernels:
        value = "r.kernel"
        terms = ("CASE WHEN q IS NULL OR size(q) <> size(w) THEN 0.0 "
                 "ELSE reduce(s = 0.0, i IN range(0, size(q) - 1) | s + q[i] * w[i]) END",
                 "reduce(s = 0.0, v IN w | s + v * v)")
    else:
        value = "r.sum"
        terms = "coalesce(q, 0.0) * w", "w * w"
    return f"""
MATCH (y:Neuron {{model: $model, layer: $layer}}) WHERE y.uid <> $uid
MATCH {pattern}
WITH y, {value} AS w, $profile[elementId(p)] AS q
WITH y, sum({terms[0]}) AS dot, sum({terms[1]}) AS norm2, count(*) AS partners
WHERE norm2 > 0
RETURN {unit_map("y")} AS unit, dot / (sqrt(norm2) * $norm) AS cosine, partners
ORDER BY cosine DESC, unit.uid LIMIT $limit
"""


def neighbours_query(rel_type: str, side: str, detail: bool = False) -> str:
    """The partners of neuron $uid by |sum|, strongest first: inputs with ``rel_in`` at least
    $min_rel, or outputs with ``rel_out`` at least $min_rel; $sign as in ``_SIGN``; $limit rows.
    A neuron without such partners gives one row of nulls; no neuron $uid, no row.
    ``detail`` adds each edge's kernel and the partner's layer, channel and feature visualisation."""
    assert rel_type in EDGE_TYPES and side in ("inputs", "outputs")
    pattern, bound = ((f"(p:Neuron)-[r:{rel_type}]->(n)", "r.rel_in") if side == "inputs"
                      else (f"(n)-[r:{rel_type}]->(p:Neuron)", "r.rel_out"))
    # one row of nulls when the neuron has no such partners, none when there is no neuron $uid:
    # the caller tells "no partners" from "resolve an alias" in one round trip
    return f"""
MATCH (n:Neuron {{uid: $uid}})
OPTIONAL CALL (n) {{
  MATCH {pattern}
  WHERE {bound} >= $min_rel AND {_SIGN.format(r='r')}
  RETURN p, r ORDER BY abs(r.sum) DESC, p.uid LIMIT $limit
}}
RETURN p.uid AS uid, r.sum AS sum, r.l2 AS l2, r.rel_in AS rel_in, r.rel_out AS rel_out{_DETAIL if detail else ""}
ORDER BY abs(sum) DESC, uid
"""


_DETAIL = (", r.kernel AS kernel, r.kh AS kh, r.kw AS kw, p.layer AS layer, p.channel AS channel, "
           "p.featurevis AS featurevis")


def circuit_step(rel_type: str, kernels: bool) -> str:
    """The inputs of each neuron in $uids at least $min_rel of its strongest input (the $limit
    strongest over all of them) as one row of aligned columns: ``target`` and ``source`` uids,
    ``sum``, ``rel_in`` (stored, unsigned), ``l1``, ``l2``, ``max``, ``min``, ``kh``, ``kw`` and
    flat kernels (when asked; else an empty list)."""
    assert rel_type in EDGE_TYPES
    return f"""
UNWIND $uids AS uid
MATCH (b:Neuron {{uid: uid}})
MATCH (a)-[r:{rel_type}]->(b)
WHERE r.sum <> 0 AND r.rel_in >= $min_rel AND {_SIGN.format(r='r')}
WITH uid, a, r ORDER BY r.rel_in DESC, uid, a.uid LIMIT $limit
RETURN collect(uid) AS target, collect(a.uid) AS source, collect(r.sum) AS sum, collect(r.rel_in) AS rel_in,
       collect(r.l1) AS l1, collect(r.l2) AS l2, collect(r.max) AS max, collect(r.min) AS min,
       collect(r.kh) AS kh, collect(r.kw) AS kw, {"collect(r.kernel)" if kernels else "[]"} AS kernel
"""


UNITS_PROPERTIES = "UNWIND $uids AS uid MATCH (n:Neuron {uid: uid}) RETURN properties(n) AS props"


def path_predecessors(rel_type: str) -> str:
    """The distinct neurons one ``rel_type`` edge before any of $ids (element ids)."""
    assert rel_type in EDGE_TYPES
    return f"""
UNWIND $ids AS id
MATCH (a)-[:{rel_type}]->(b) WHERE elementId(b) = id
RETURN DISTINCT elementId(a) AS id
"""


def path_degrees(rel_type: str) -> str:
    """How many ``rel_type`` edges leave the neurons $sources and enter the neurons $targets (maps
    element id -> the caller's integer): what each direction of :func:`path_edges` would scan."""
    assert rel_type in EDGE_TYPES
    return f"""
CALL () {{ UNWIND keys($sources) AS id MATCH (n:Neuron) WHERE elementId(n) = id
          RETURN sum(COUNT {{ (n)-[:{rel_type}]->() }}) AS forward }}
CALL () {{ UNWIND keys($targets) AS id MATCH (n:Neuron) WHERE elementId(n) = id
          RETURN sum(COUNT {{ (n)<-[:{rel_type}]-() }}) AS backward }}
RETURN forward, backward
"""


def path_edges(rel_type: str, forward: bool) -> str:
    """The ``rel_type`` edges from the neurons $sources to the neurons $targets (maps element id ->
    the caller's integer), scanned from the sources (``forward``) or from the targets, one row per
    scanned neuron: ``src``, ``dst`` (integers, one a list) and ``sum`` (a list)."""
    assert rel_type in EDGE_TYPES
    if forward:
        return f"""
UNWIND keys($sources) AS id
MATCH (a)-[r:{rel_type}]->(b) WHERE elementId(a) = id
WITH $sources[id] AS src, $targets[elementId(b)] AS dst, r
WHERE dst IS NOT NULL
RETURN src, collect(dst) AS dst, collect(r.sum) AS sum
"""
    return f"""
UNWIND keys($targets) AS id
MATCH (a)-[r:{rel_type}]->(b) WHERE elementId(b) = id
WITH $sources[elementId(a)] AS src, $targets[id] AS dst, r
WHERE src IS NOT NULL
RETURN collect(src) AS src, dst, collect(r.sum) AS sum
"""


LAYER_FEEDS = "MATCH (a:Layer {model: $model})-[:FEEDS {kind: $kind}]->(b:Layer) RETURN a.name AS src, b.name AS dst"

LAYERS_NEURON_IDS = "MATCH (n:Neuron {model: $model}) WHERE n.layer IN $layers RETURN elementId(n) AS id, n.layer AS layer"


def path_nodes(rel_type: str) -> str:
    """uid and strongest input of each neuron in $ids (element ids)."""
    return f"""
UNWIND $ids AS id
MATCH (b:Neuron) WHERE elementId(b) = id
{strongest_input(rel_type, 'b')}
RETURN id, b.uid AS uid, b_in
"""


UNIT_EXISTS = "UNWIND $uids AS uid MATCH (n:Neuron {uid: uid}) RETURN n.uid AS uid, elementId(n) AS id"

LAYER_EDGE_KINDS = """
UNWIND $uids AS uid
MATCH (l:Layer {uid: uid})
RETURN uid, EXISTS { (l)<-[:FEEDS {kind: 'expanded'}]-() } AS expanded_in,
       EXISTS { (l)-[:FEEDS {kind: 'expanded'}]->() } AS expanded_out
"""

# -- the viewer (circuitatlas.web, through queries/viewer.py) ------------------------------------
MODEL_ANALYSES = """
MATCH (c:Cluster {model: $model})
WITH c.analysis AS analysis, c.src_layer AS src, c.dst_layer AS dst, c.k AS k, c.method AS method,
     collect(DISTINCT c.side) AS sides
RETURN analysis, src, dst, k, method, sides ORDER BY analysis
"""

MODEL_BRANCHES = """
MATCH (n:Neuron {model: $model}) WHERE n.branch IS NOT NULL
WITH n.layer AS layer, n.branch AS branch, count(*) AS units ORDER BY branch
RETURN layer, collect({branch: branch, units: units}) AS branches
"""

# one row holding a list: a 1024-unit layer decodes in a fifth of the time of 1024 rows
LAYER_UNITS = """
MATCH (n:Neuron {model: $model, layer: $layer})
WITH n ORDER BY n.channel
RETURN collect(n {.channel, .uid, .branch, .orientation, selectivity: n.orientation_selectivity, .featurevis,
                  activation: n.featurevis_activation,
                  clusters: [(n)-[:IN_CLUSTER]->(c:Cluster) | c {.analysis, .side, .index}],
                  motifs: [(n)-[r:IN_MOTIF]->(m:Motif) | {uid: m.uid, kind: m.kind, role: r.role}]}) AS units
"""

LAYER_IMAGE_KERNELS = """
MATCH (i:Neuron {model: $model, layer: 'input'})-[w:WEIGHT]->(n:Neuron {model: $model, layer: $layer})
RETURN n.channel AS channel, i.channel AS rgb, w.kernel AS kernel, w.kh AS kh, w.kw AS kw
"""

NEURON_MEMBERSHIPS = """
MATCH (n:Neuron {uid: $uid})
RETURN COLLECT { MATCH (n)-[r:IN_MOTIF]->(m:Motif)
                 RETURN {uid: m.uid, kind: m.kind, role: r.role, score: m.score, p_value: m.p_value,
                         layers: m.layers, fit: r.fit, orientation: r.orientation} ORDER BY m.uid } AS motifs,
       COLLECT { MATCH (n)-[:IN_CLUSTER]->(c:Cluster)
                 RETURN c {.analysis, .side, .index, .size, .src_layer, .dst_layer} ORDER BY c.analysis } AS clusters,
       COLLECT { MATCH (n)-[r:ANALOGOUS]-(m:Neuron)
                 RETURN {uid: m.uid, model: m.model, layer: m.layer, channel: m.channel, featurevis: m.featurevis,
                         score: r.score, p_value: r.p_value, mutual: r.mutual, analysis: r.analysis}
                 ORDER BY r.score DESC } AS analogues
"""

MOTIF = """
MATCH (m:Motif {uid: $uid})
OPTIONAL MATCH (n:Neuron)-[r:IN_MOTIF]->(m)
WITH m, n, r ORDER BY r.role, r.orientation, n.layer, n.channel
RETURN properties(m) AS motif,
       [x IN collect({uid: n.uid, layer: n.layer, channel: n.channel, featurevis: n.featurevis, role: r.role,
                      orientation: r.orientation, fit: r.fit, fit_without_strongest: r.fit_without_strongest,
                      fit_p: r.fit_p}) WHERE x.uid IS NOT NULL] AS members
"""

SVD_ANALYSIS = """
MATCH (c:Cluster {model: $model, analysis: $analysis})
OPTIONAL MATCH (n:Neuron)-[:IN_CLUSTER]->(c)
WITH c, n ORDER BY n.layer, n.channel
RETURN c.side AS side, c.index AS index, c.size AS size, c.k AS k, c.src_layer AS src, c.dst_layer AS dst,
       c.params AS params,
       [x IN collect({uid: n.uid, layer: n.layer, channel: n.channel, branch: n.branch, featurevis: n.featurevis,
                      coords: CASE c.side WHEN 'input' THEN n.svd_in ELSE n.svd_out END})
        WHERE x.uid IS NOT NULL] AS members
ORDER BY side, index
"""


# -- universality (jobs/universality.py): one transaction replaces a comparison ------------------
REPLACE_COMPARISON = """
MATCH (la:Layer {uid: $layer_a}), (lb:Layer {uid: $layer_b})
CALL (la) { OPTIONAL MATCH (:Neuron {model: la.model, layer: la.name})-[r:ANALOGOUS {analysis: $analysis}]->()
            DELETE r }
CALL (la) { OPTIONAL MATCH (la)-[s:SIMILAR {analysis: $analysis}]->() DELETE s }
CALL (la) { OPTIONAL MATCH (:Motif {model: la.model})-[r:ANALOGOUS {analysis: $analysis}]->() DELETE r }
CREATE (la)-[s:SIMILAR]->(lb)
SET s = $similar, s.analysis = $analysis, s.at = datetime()
WITH la
CALL (la) { UNWIND $pairs AS row
            MATCH (a:Neuron {uid: row.a}), (b:Neuron {uid: row.b})
            CREATE (a)-[r:ANALOGOUS]->(b) SET r = row.props, r.analysis = $analysis }
CALL (la) { UNWIND $families AS row
            MATCH (a:Motif {uid: row.a}), (b:Motif {uid: row.b})
            CREATE (a)-[r:ANALOGOUS]->(b) SET r = row.props, r.analysis = $analysis }
RETURN count(*) AS done
"""

NEURON_ANALOGUES = """
MATCH (n:Neuron {uid: $uid})-[r:ANALOGOUS]-(m:Neuron)
RETURN m.uid AS uid, m.model AS model, m.layer AS layer, m.channel AS channel, r.score AS score,
       r.p_value AS p_value, r.mutual AS mutual, r.best_for AS best_for, r.analysis AS analysis,
       startNode(r) = n AS from_here
ORDER BY score DESC
"""

LAYER_SIMILARITY = """
MATCH (a:Layer)-[s:SIMILAR]->(b:Layer)
WHERE a.model IN $models AND b.model IN $models
RETURN a.model AS model_a, a.name AS layer_a, b.model AS model_b, b.name AS layer_b, s.cka AS cka,
       s.cka_p AS cka_p, s.cka_random AS cka_random, s.matched AS matched, s.analysis AS analysis
ORDER BY model_a, model_b, layer_a, layer_b
"""

FAMILY_ANALOGUES = """
MATCH (a:Motif)-[r:ANALOGOUS]->(b:Motif)
WHERE a.model IN $models AND b.model IN $models
RETURN a.uid AS family_a, b.uid AS family_b, a.model AS model_a, b.model AS model_b, properties(r) AS match
ORDER BY family_a
"""


# -- circuit editing (jobs/editing.py): an edit and what it touches, in one transaction -----------
# A user's predicate is placed inside the parentheses of the WHERE below only after
# queries/editing.py has checked that it cannot close them (and it runs read-only).
EDGES_WHERE = """
MATCH (a:Neuron {{model: $model}})-[w:WEIGHT]->(b:Neuron {{model: $model}})
WHERE ({predicate})
RETURN a.layer AS src_layer, a.channel AS src_channel, b.layer AS dst_layer, b.channel AS dst_channel
ORDER BY dst_layer, dst_channel, src_layer, src_channel
"""

UNITS_WHERE = """
MATCH (n:Neuron {{model: $model}})
WHERE ({predicate})
RETURN n.layer AS layer, n.channel AS channel ORDER BY layer, channel
"""

EDIT_EXISTS = "MATCH (e:Edit {uid: $uid}) RETURN e.uid AS uid"

CREATE_EDIT = """
MATCH (m:Model {id: $model})
CREATE (e:Edit {uid: $uid, name: $name, model: $model, created: datetime()})
SET e += $props
WITH e
CALL (e) { UNWIND $ablations AS row
           MATCH (n:Neuron {uid: row.uid})
           CREATE (e)-[r:ABLATES]->(n) SET r = row.props }
CALL (e) { UNWIND $edges AS row
           MATCH (n:Neuron {uid: row.dst})
           CREATE (e)-[r:EDITS_EDGE]->(n) SET r = row.props }
CALL (e) { UNWIND $replacements AS row
           MATCH (n:Neuron {uid: row.uid})
           CREATE (e)-[r:REPLACES]->(n) SET r = row.props }
RETURN e.uid AS uid, COUNT { (e)-[]->() } AS touches
"""

EDIT = """
MATCH (e:Edit {uid: $uid})
RETURN properties(e) AS edit,
       COLLECT { MATCH (e)-[r:ABLATES]->(n) RETURN {layer: n.layer, channel: n.channel, props: properties(r)}
                 ORDER BY n.layer, n.channel } AS ablations,
       COLLECT { MATCH (e)-[r:EDITS_EDGE]->(n) RETURN {layer: n.layer, channel: n.channel, props: properties(r)}
                 ORDER BY n.layer, n.channel, r.src } AS edges,
       COLLECT { MATCH (e)-[r:REPLACES]->(n) RETURN {layer: n.layer, channel: n.channel, props: properties(r)}
                 ORDER BY n.layer, n.channel } AS replacements
"""

LIST_EDITS = """
MATCH (e:Edit {model: $model})
RETURN e.name AS name, e.uid AS uid, e.description AS description, toString(e.created) AS created,
       COUNT { (e)-[:ABLATES]->() } AS ablations, COUNT { (e)-[:EDITS_EDGE]->() } AS edges,
       COUNT { (e)-[:REPLACES]->() } AS replacements, e.effect_summary AS effect_summary
ORDER BY name
"""

SET_EDIT_EFFECT = """
MATCH (e:Edit {uid: $uid})
SET e.effect = $effect, e.effect_summary = $summary, e.effect_at = datetime()
RETURN e.uid AS uid
"""

DELETE_EDIT = "MATCH (e:Edit {uid: $uid}) DETACH DELETE e RETURN count(*) AS deleted"

SET_MOTIF_FAITHFULNESS = """
MATCH (m:Motif {uid: $uid})
SET m.faithfulness = $faithfulness, m.faithfulness_detail = $detail
RETURN m.uid AS uid
"""

NEURON_EDITS = """
MATCH (e:Edit)-[r]->(n:Neuron {uid: $uid})
RETURN e.name AS name, e.model AS model, type(r) AS how, r.mode AS mode, r.src AS src, r.factor AS factor
ORDER BY name
"""
