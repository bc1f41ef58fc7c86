-- Several nodes on one database (PostgreSQL; SQLite is one node).
-- nodes: one row per running Sluice process, refreshed by its heartbeat.
-- mapping_holds: mappings every node must keep stopped (an offset reset).
-- mapping_pollers: how many pollers the elected node's autoscaler wants.
-- metric_points gains the node that measured the point: each node stores
-- what its own pollers did, and readers sum the nodes.

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    address       TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_ms    BIGINT NOT NULL,
    heartbeat_ms  BIGINT NOT NULL,
    leader        BIGINT NOT NULL,  -- 1 while it holds the cluster lock
    running       TEXT NOT NULL     -- JSON: mapping UUID -> pollers on this node
);

CREATE TABLE mapping_holds (
    uuid      TEXT PRIMARY KEY,
    node      TEXT NOT NULL,
    since_ms  BIGINT NOT NULL
);

CREATE TABLE mapping_pollers (
    uuid     TEXT PRIMARY KEY,
    pollers  BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE metric_points_by_node (
    uuid          TEXT NOT NULL,
    resolution_ms BIGINT NOT NULL,
    time_ms       BIGINT NOT NULL,
    node          TEXT NOT NULL,
    point         TEXT NOT NULL,
    PRIMARY KEY (uuid, resolution_ms, time_ms, node)
);

INSERT INTO metric_points_by_node (uuid, resolution_ms, time_ms, node, point)
    SELECT uuid, resolution_ms, time_ms, '', point FROM metric_points;
DROP TABLE metric_points;
ALTER TABLE metric_points_by_node RENAME TO metric_points;
