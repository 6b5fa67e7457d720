-- Starting runs in bulk: one start_runs call starts 1,000 runs of a
-- one-node workflow in one statement and one transaction.
SELECT count(*) FROM vectorbea.start_runs('bench', pg_catalog.array_fill('{}'::jsonb, ARRAY[1000]));
