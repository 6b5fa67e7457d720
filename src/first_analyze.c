/*-------------------------------------------------------------------------
 *
 * first_analyze.c
 *	  The engine's first ANALYZE of nodes and runs, made by the scheduler
 *	  as soon as they have grown, instead of at autovacuum's first visit.
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
 * So a claim that finds nodes or runs never analysed (reltuples < 0, the
 * sign of neither ANALYZE nor VACUUM) and already VB_FIRST_ANALYZE_PAGES
 * big wakes the scheduler, at most once a second per session; the
 * scheduler's pass analyses such tables first (SKIP_LOCKED: an autovacuum
 * at work on one gives it its statistics anyway).  ANALYZE invalidates
 * every cached plan on the table, so each session plans again, with
 * statistics.  Later growth is autoanalyze's, as before.  Without a
 * scheduler for the database (not preloaded, or not in
 * vectorbea.database) the first ANALYZE stays autovacuum's.
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

/* True when vectorbea.<name> was never analysed or vacuumed and is big. */
static bool
grown_unanalysed(const char *name)
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
	grown = rel->rd_rel->reltuples < 0 &&
		RelationGetNumberOfBlocks(rel) >= VB_FIRST_ANALYZE_PAGES;
	relation_close(rel, AccessShareLock);
	return grown;
}

/*
 * Whether this session should ask the scheduler for a first ANALYZE: a
 * watched table is big and was never analysed.  Looks at most once a
 * second; in a transaction.
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
		if (grown_unanalysed(watched_tables[i]))
			return true;
	return false;
}

/*
 * Analyses the watched tables that are big and were never analysed; the
 * scheduler's step, inside SPI.  Returns how many it analysed.
 */
int
vb_first_analyze(void)
{
	int			analysed = 0;

	for (int i = 0; i < (int) lengthof(watched_tables); i++)
	{
		const char *name = watched_tables[i];

		if (!grown_unanalysed(name))
			continue;
		if (SPI_execute(psprintf("ANALYZE (SKIP_LOCKED) vectorbea.%s", name), false, 0) !=
			SPI_OK_UTILITY)
			elog(ERROR, "vectorbea: could not analyse vectorbea.%s", name);
		/* Skipped (PostgreSQL warned): autovacuum holds it, and is at it. */
		if (grown_unanalysed(name))
			continue;
		ereport(LOG,
				(errmsg("vectorbea scheduler: analysed vectorbea.%s, which had grown to at least %d pages without statistics",
						name, VB_FIRST_ANALYZE_PAGES)));
		analysed++;
	}
	return analysed;
}
