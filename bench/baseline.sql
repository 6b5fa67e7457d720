-- (a) The yardstick: one bare one-row INSERT, committed on its own.
-- pgbench counts one transaction per run of this script.
INSERT INTO bench_baseline (v) VALUES (1);
