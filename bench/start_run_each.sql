-- Starting runs one call each: 1,000 start_run calls in one statement and
-- one transaction, to compare with start_runs.sql.
SELECT count(vectorbea.start_run('bench')) FROM pg_catalog.generate_series(1, 1000);
