/*-------------------------------------------------------------------------
 *
 * first_analyze.c
 *	  ANALYZE of nodes and runs made by the scheduler as soon as they have
 *	  outgrown their statistics, instead of at autovacuum's next visit.
 *
 * The engine prepares its claim and completion statements once per
 * session with a generic plan.  A plan made while nodes and runs were new
 * and never analysed assumes ten pages, and reads them whole (a sequential
 * scan under an UPDATE by id, a run lock through a scan of runs); it stays
 * until something invalidates it, which the first autoanalyze does, up to
 * a minute (autovacuum_naptime) after the tables started filling, and
 * later when autovacuum is busy elsewhere.  Meanwhile every claim reads
 * the whole table, grows slower as it grows, holds its run locks longer,
 * and completions queue behind it (bench/README.md, steady load: issue
 * 11's stall "until the first autovacuum and ANALYZE of the new tables").
 *
 * A plan made while the tables were analysed but small is as bad: a
 * living graph that spawns thousands of nodes a few seconds after the
 * tables held a few dozen rows kept the sessions' plans of those few pages
 * (a fan-out of 1,000 spawned at run time cost 3.1 ms of server CPU per
 * task against 1.2 ms for the same graph in the definition, whose tables
 * the benchmark had analysed full; bench/README.md, "Fan-outs").
 *
 * So a claim, or a start of runs (a backlog loaded before the workers
 * start claims nothing), that finds nodes or runs VB_FIRST_ANALYZE_PAGES
 * big and never analysed (reltuples < 0, the sign of neither ANALYZE nor
 * VACUUM), or OUTGROWN_FACTOR times as big as when they last were
 * (relpages), wakes the scheduler, at most once a second per session; the
 * scheduler's pass analyses such tables first (SKIP_LOCKED: an autovacuum
 * at work on one gives it its statistics anyway).  ANALYZE invalidates
 * every cached plan on the table, so each session plans again, with
 * statistics.  Steady growth stays autoanalyze's (10 % by default): a
 * table crosses eight times its analysed size only in a burst.  Without a
 * scheduler for the database (not preloaded, or not in vectorbea.database)
 * these analyses stay autovacuum's.
 *
 * IDENTIFICATION
 *	  src/first_analyze.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "storage/bufmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "first_analyze.h"

/* The tables whose statistics the engine's hot plans depend on. */
static const char *const watched_tables[] = {"nodes", "runs"};

/* How often one session looks, in ms. */
#define LOOK_INTERVAL_MS	1000

/* A table this many times as big as at its last ANALYZE or VACUUM. */
#define OUTGROWN_FACTOR		8

/*
 * True when vectorbea.<name> is big and was never analysed or vacuumed, or
 * has grown OUTGROWN_FACTOR times since; its size then into *pages.
 */
static bool
outgrew_statistics(const char *name, BlockNumber *pages)
{
	Oid			nsp = get_namespace_oid("vectorbea", true);
	Oid			relid;
	Relation	rel;
	bool		grown;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid(name, nsp);
	if (!OidIsValid(relid))
		return false;
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return false;
	*pages = RelationGetNumberOfBlocks(rel);
	grown = *pages >= VB_FIRST_ANALYZE_PAGES &&
		(rel->rd_rel->reltuples < 0 ||
		 *pages / OUTGROWN_FACTOR >= (BlockNumber) Max(rel->rd_rel->relpages, 1));
	relation_close(rel, AccessShareLock);
	return grown;
}

/*
 * Whether this session should ask the scheduler for an ANALYZE: a watched
 * table has outgrown its statistics.  Looks at most once a second; in a
 * transaction.
 */
bool
vb_first_analyze_wanted(void)
{
	static TimestampTz last_look = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(last_look, now, LOOK_INTERVAL_MS))
		return false;
	last_look = now;
	for (int i = 0; i < (int) lengthof(watched_tables); i++)
	{
		BlockNumber pages;

		if (outgrew_statistics(watched_tables[i], &pages))
			return true;
	}
	return false;
}

/*
 * Analyses the watched tables that have outgrown their statistics; the
 * scheduler's step, inside SPI.  Returns how many it analysed.
 */
int
vb_first_analyze(void)
{
	int			analysed = 0;

	for (int i = 0; i < (int) lengthof(watched_tables); i++)
	{
		const char *name = watched_tables[i];
		BlockNumber pages;

		if (!outgrew_statistics(name, &pages))
			continue;
		if (SPI_execute(psprintf("ANALYZE (SKIP_LOCKED) vectorbea.%s", name), false, 0) !=
			SPI_OK_UTILITY)
			elog(ERROR, "vectorbea: could not analyse vectorbea.%s", name);
		/* Skipped (PostgreSQL warned): autovacuum holds it, and is at it. */
		if (outgrew_statistics(name, &pages))
			continue;
		ereport(LOG,
				(errmsg("vectorbea scheduler: analysed vectorbea.%s, which had outgrown its statistics (%u pages)",
						name, pages)));
		analysed++;
	}
	return analysed;
}
