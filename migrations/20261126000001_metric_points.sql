-- Metric history: one row per mapping and interval, at two resolutions
-- (1 minute, kept two days; 15 minutes, kept for the retention). The point
-- is JSON (sluice_app::metrics::MetricPoint), partitions included.

CREATE TABLE metric_points (
    uuid          TEXT NOT NULL,
    resolution_ms BIGINT NOT NULL,
    time_ms       BIGINT NOT NULL,   -- end of the interval
    point         TEXT NOT NULL,
    PRIMARY KEY (uuid, resolution_ms, time_ms)
);
