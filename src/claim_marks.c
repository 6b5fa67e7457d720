/*-------------------------------------------------------------------------
 *
 * claim_marks.c
 *	  Where a claim of one activity starts looking for ready nodes.
 *
 * nodes_ready_run_idx is a queue index: each claimed node leaves its
 * "ready" entry behind, in front of the live ones in the claim's order
 * (priority descending, then run id, which grows with time).  Vacuum, or
 * the next scan marking them dead, removes them within moments, unless a
 * snapshot older than them is held: then no entry can go, each costs the
 * claim a heap visit, and a claim that starts at the front of the index
 * reads every node claimed since the snapshot was taken (a minute of
 * 400 tasks a second: 24,000 visits per claim; bench/README.md, growth
 * under a held snapshot).
 *
 * So for each database and activity a mark is kept in shared memory: a key
 * (priority, run id) with no ready node of the activity before it that a
 * new snapshot could see.  Claims start there; now and then a claim moves
 * the mark up to the first ready node it finds (one index scan from the
 * mark), and a claim then pays only for the entries claimed since.
 *
 * Moving a mark up must never pass a node that becomes ready later in a
 * transaction the moving claim could not see.  Every row that becomes
 * ready (or stays ready with a new key) is noted: updated rows by the
 * trigger nodes_note_ready, whatever path wrote them; inserted rows by the
 * engine's inserts themselves (state.c); an insert by anything else holds
 * and then lowers every mark of the database (nodes_note_inserts).  The
 * transaction publishes what it noted (activity, lowest key) just before
 * it commits, and once the commit is visible it lowers the mark to its
 * key, adds the key to the slot's floor, and withdraws what it published
 * (its own claims start at its keys before that).  A claim reads the mark
 * and the slot's generation before its scan takes a snapshot, and after
 * the scan moves the mark, only if no other claim moved it meanwhile
 * (same generation), to the lowest of what it found, the floor (commits
 * since the last move) and what is published (transactions committing
 * now).  A transaction that committed before the claim read the mark is
 * in its snapshot; one that commits during the scan is in the floor; one
 * still committing is published; one that commits after the move lowers
 * the mark itself.
 *
 * A prepared transaction that made nodes ready commits later, from any
 * backend, with no callback here; so do transactions prepared before the
 * server started (recovered from disk, unseen by this memory).  While one
 * may be left, the marks are dropped and claims start at the front: those
 * of its database until the transaction has ended (by its id), from the
 * PREPARE, or from the first claim after the server's start for those it
 * recovered (pg_prepared_xact() names their databases); every database's
 * when more are prepared than the list of ids holds (until every
 * transaction up to the newest of them has ended).  Then the marks dropped
 * start again at the front.
 *
 * Without shared memory (the library not preloaded), without the trigger
 * (a 0.1.0 schema) or with it disabled, claims start at the front.
 * Activities whose name does not fit a slot, or beyond the slots' number,
 * are claimed from the front.
 *
 * IDENTIFICATION
 *	  src/claim_marks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "vectorbea.h"
#include "claim_marks.h"
#include "settings.h"
#include "spi_util.h"

#define MARK_SLOTS			256
#define MARK_NAME_LEN		64	/* longer activity names keep no mark */
#define NOTED_PER_XACT		8	/* more activities in one transaction: all slots held */
#define REFRESH_EVERY_MS	10	/* at most this often a claim moves a mark up */
#define DROPPERS_KEPT		64	/* more prepared at once: waits by age instead */
#define RESTORE_CHECK_MS	10	/* while dropped, at most this often a claim checks */
#define NOTE_TRIGGER		"nodes_note_ready"
#define NOTE_INSERT_TRIGGER	"nodes_note_inserts"

const VbClaimKey VB_CLAIM_KEY_FIRST = {PG_INT32_MAX, {{0}}};

/* After every node: a mark there means the activity has nothing ready. */
static const VbClaimKey KEY_PAST_END = {PG_INT32_MIN,
{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}};

typedef struct MarkSlot
{
	bool		in_use;
	Oid			database;
	uint32		name_hash;
	char		activity[MARK_NAME_LEN];
	VbClaimKey	mark;
	VbClaimKey	floor;			/* lowest key committed since the last move */
	bool		has_floor;
	uint64		generation;		/* new at every move and at the slot's creation */
	int			published;		/* transactions that published a key here */
	TimestampTz refreshed_at;
	uint64		last_used;
} MarkSlot;

/* What one backend's committing transaction published. */
typedef struct Published
{
	Oid			database;
	bool		all;			/* holds every slot of the database */
	int			n;
	int			slot[NOTED_PER_XACT];
	VbClaimKey	key[NOTED_PER_XACT];
} Published;

typedef struct MarksShared
{
	LWLock	   *lock;
	bool		started;		/* a claim has come since the server started */
	bool		dropped;		/* a commit unseen here may make nodes ready, anywhere */
	uint64		drops;			/* counts those drops: a restore sees none came */
	int			n_droppers;
	TransactionId droppers[DROPPERS_KEPT];	/* prepared, made nodes ready */
	Oid			dropper_dbs[DROPPERS_KEPT]; /* in this database: its marks are dropped */
	TransactionId older_than;	/* or: every transaction before this one, anywhere */
	TimestampTz checked_at;		/* when a claim last checked the droppers */
	uint64		next_generation;
	uint64		use_clock;
	MarkSlot	slots[MARK_SLOTS];
	Published	published[FLEXIBLE_ARRAY_MEMBER];	/* by BackendId - 1 */
} MarksShared;

static MarksShared *marks = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* What this transaction's rows made ready, by activity: the lowest key. */
static struct
{
	char		activity[MARK_NAME_LEN];
	VbClaimKey	key;
}			noted[NOTED_PER_XACT];
static int	n_noted = 0;
static bool noted_all = false;	/* more activities than noted[] holds */
static bool did_publish = false;
static bool callback_registered = false;
static bool engine_insert = false;	/* the next INSERT into nodes notes itself */

static Size
marks_size(void)
{
	return add_size(offsetof(MarksShared, published), mul_size(sizeof(Published), MaxBackends));
}

static void
marks_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(marks_size());
	RequestNamedLWLockTranche("vectorbea_claim_marks", 1);
}

static void
marks_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	marks = ShmemInitStruct("vectorbea_claim_marks", marks_size(), &found);
	if (!found)
	{
		memset(marks, 0, marks_size());
		marks->lock = &(GetNamedLWLockTranche("vectorbea_claim_marks"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
vb_claim_marks_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = marks_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = marks_shmem_startup;
}

/* Negative when a comes first in nodes_ready_run_idx's order. */
static int
key_cmp(const VbClaimKey *a, const VbClaimKey *b)
{
	if (a->priority != b->priority)
		return a->priority > b->priority ? -1 : 1;
	return memcmp(a->run_id.data, b->run_id.data, UUID_LEN);
}

static void
lower_to(VbClaimKey *key, const VbClaimKey *to)
{
	if (key_cmp(to, key) < 0)
		*key = *to;
}

static uint32
name_hash(const char *activity)
{
	return hash_bytes((const unsigned char *) activity, strlen(activity));
}

/* The slot of this database's activity, or -1.  Under the lock. */
static int
find_slot(const char *activity, uint32 hash)
{
	for (int i = 0; i < MARK_SLOTS; i++)
	{
		MarkSlot   *s = &marks->slots[i];

		if (s->in_use && s->name_hash == hash && s->database == MyDatabaseId &&
			strcmp(s->activity, activity) == 0)
			return i;
	}
	return -1;
}

/*
 * The slot of the activity, made when missing: a free one, or the least
 * used one that no committing transaction holds (its activity is claimed
 * from the front until it gets a slot again).  -1 when none can be had.
 * Under the lock, held exclusively.
 */
static int
find_or_make_slot(const char *activity)
{
	uint32		hash = name_hash(activity);
	int			i = find_slot(activity, hash);
	int			victim = -1;
	MarkSlot   *s;

	if (i >= 0)
		return i;
	for (i = 0; i < MARK_SLOTS; i++)
	{
		s = &marks->slots[i];
		if (!s->in_use)
		{
			victim = i;
			break;
		}
		if (s->published == 0 &&
			(victim < 0 || s->last_used < marks->slots[victim].last_used))
			victim = i;
	}
	if (victim < 0)
		return -1;
	s = &marks->slots[victim];
	memset(s, 0, sizeof(MarkSlot));
	s->in_use = true;
	s->database = MyDatabaseId;
	s->name_hash = hash;
	strlcpy(s->activity, activity, MARK_NAME_LEN);
	s->mark = VB_CLAIM_KEY_FIRST;
	s->generation = ++marks->next_generation;
	s->last_used = ++marks->use_clock;
	return victim;
}

static void
forget_noted(void)
{
	n_noted = 0;
	noted_all = false;
	did_publish = false;
	engine_insert = false;
}

/* Just before the commit: what this transaction made ready, for claims. */
static void
publish_noted(void)
{
	Published  *p = &marks->published[MyBackendId - 1];

	LWLockAcquire(marks->lock, LW_EXCLUSIVE);
	p->database = MyDatabaseId;
	p->all = noted_all;
	p->n = 0;
	for (int i = 0; i < n_noted; i++)
	{
		int			slot = find_or_make_slot(noted[i].activity);

		if (slot < 0)
		{
			/* No slot now, but one may be made before this commits. */
			p->all = true;
			continue;
		}
		p->slot[p->n] = slot;
		p->key[p->n] = noted[i].key;
		p->n++;
		marks->slots[slot].published++;
	}
	LWLockRelease(marks->lock);
	did_publish = true;
}

/*
 * Withdraws what this transaction published; once committed (visible to
 * new snapshots), lowers the marks to its keys first.
 */
static void
withdraw_published(bool committed)
{
	Published  *p = &marks->published[MyBackendId - 1];

	LWLockAcquire(marks->lock, LW_EXCLUSIVE);
	for (int i = 0; i < p->n; i++)
	{
		MarkSlot   *s = &marks->slots[p->slot[i]];

		if (committed)
		{
			lower_to(&s->mark, &p->key[i]);
			if (!s->has_floor)
				s->floor = p->key[i];
			else
				lower_to(&s->floor, &p->key[i]);
			s->has_floor = true;
		}
		s->published--;
	}
	if (committed && p->all)
	{
		for (int i = 0; i < MARK_SLOTS; i++)
		{
			MarkSlot   *s = &marks->slots[i];

			if (s->in_use && s->database == MyDatabaseId)
			{
				s->mark = VB_CLAIM_KEY_FIRST;
				s->floor = VB_CLAIM_KEY_FIRST;
				s->has_floor = true;
			}
		}
	}
	p->n = 0;
	p->all = false;
	p->database = InvalidOid;
	LWLockRelease(marks->lock);
}

/*
 * Drops database db's marks until transaction xid (prepared, having made,
 * or maybe made, nodes ready there) has ended; with the list full, every
 * database's until every transaction up to xid has.  Under the marks' lock.
 */
static void
drop_marks_until_ended_locked(TransactionId xid, Oid db)
{
	if (marks->n_droppers < DROPPERS_KEPT)
	{
		marks->droppers[marks->n_droppers] = xid;
		marks->dropper_dbs[marks->n_droppers] = db;
		marks->n_droppers++;
	}
	else
	{
		TransactionIdAdvance(xid);
		if (!TransactionIdIsValid(marks->older_than) ||
			TransactionIdFollows(xid, marks->older_than))
			marks->older_than = xid;
		marks->dropped = true;
		marks->drops++;
	}
}

/*
 * Drops this database's marks until this transaction, being prepared, has
 * ended.  A transaction with no id wrote nothing and made nothing ready.
 */
static void
drop_marks_until_ended(TransactionId xid)
{
	if (!TransactionIdIsValid(xid))
		return;
	LWLockAcquire(marks->lock, LW_EXCLUSIVE);
	drop_marks_until_ended_locked(xid, MyDatabaseId);
	LWLockRelease(marks->lock);
}

/* Whether this database's marks are dropped.  Under the marks' lock. */
static bool
dropped_here(void)
{
	if (marks->dropped)
		return true;
	for (int i = 0; i < marks->n_droppers; i++)
		if (marks->dropper_dbs[i] == MyDatabaseId)
			return true;
	return false;
}

/* A new generation at the front for the marks of database db (every one's: InvalidOid). */
static void
restart_marks_locked(Oid db)
{
	for (int i = 0; i < MARK_SLOTS; i++)
	{
		MarkSlot   *s = &marks->slots[i];

		if (!s->in_use || (OidIsValid(db) && s->database != db))
			continue;
		s->mark = VB_CLAIM_KEY_FIRST;
		s->has_floor = false;
		s->generation = ++marks->next_generation;
	}
}

/*
 * The first claim since the server started (a crash included): the
 * transactions the server recovered as prepared are not among the
 * droppers, for no memory here saw them prepared, and any of them may
 * have made nodes ready.  Each drops its own database's marks, as if it
 * had been prepared now; another database's claims keep theirs.  One
 * prepared since the start that made nodes ready is listed already, by its
 * PREPARE, or is being prepared and lists itself.  Reads
 * pg_prepared_xact(), which names each one's database: the caller is
 * connected to SPI, as the extension's owner (the claim's door switched to
 * it), so a worker role's own grants do not matter.
 */
static void
start_marks(void)
{
	int			n;
	TransactionId *xids;
	Oid		   *dbs;

	if (SPI_execute("SELECT transaction, dbid FROM pg_catalog.pg_prepared_xact()",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the prepared transactions");
	n = (int) SPI_processed;
	xids = palloc(sizeof(TransactionId) * Max(n, 1));
	dbs = palloc(sizeof(Oid) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		xids[i] = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc, 1, &isnull));
		dbs[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 2, &isnull));
	}

	LWLockAcquire(marks->lock, LW_EXCLUSIVE);
	if (!marks->started)
	{
		marks->started = true;
		for (int i = 0; i < n; i++)
		{
			bool		listed = false;

			/* prepared since the start, it listed itself at its PREPARE */
			for (int j = 0; j < marks->n_droppers && !listed; j++)
				listed = TransactionIdEquals(marks->droppers[j], xids[i]);
			if (!listed)
				drop_marks_until_ended_locked(xids[i], dbs[i]);
		}
	}
	LWLockRelease(marks->lock);
	pfree(xids);
	pfree(dbs);
}

/*
 * Brings marks back once the transactions that dropped them have ended:
 * what those made ready is then in every new snapshot.  A database's
 * marks come back when the last transaction of its own that dropped them
 * has ended, every database's when the age horizon has passed.  Each mark
 * brought back starts again at the front with a new generation, so that no
 * claim moves one with a scan from before.  A transaction that drops them
 * while they are checked is listed, or moves the horizon, and keeps them
 * off until a later check.
 */
static void
restore_marks_if_ended(TimestampTz now)
{
	TransactionId droppers[DROPPERS_KEPT];
	Oid			dbs[DROPPERS_KEPT];
	TransactionId older_than;
	int			n;
	int			n_ended = 0;
	uint64		drops;
	bool		dropped;
	bool		horizon_passed = false;
	int			kept = 0;

	LWLockAcquire(marks->lock, LW_SHARED);
	if ((!marks->dropped && marks->n_droppers == 0) ||
		!TimestampDifferenceExceeds(marks->checked_at, now, RESTORE_CHECK_MS))
	{
		LWLockRelease(marks->lock);
		return;
	}
	n = marks->n_droppers;
	memcpy(droppers, marks->droppers, n * sizeof(TransactionId));
	memcpy(dbs, marks->dropper_dbs, n * sizeof(Oid));
	dropped = marks->dropped;
	older_than = marks->older_than;
	drops = marks->drops;
	LWLockRelease(marks->lock);

	/* The ended ones to the front of droppers[] and dbs[]. */
	for (int i = 0; i < n; i++)
	{
		if (TransactionIdIsInProgress(droppers[i]))
			continue;
		droppers[n_ended] = droppers[i];
		dbs[n_ended] = dbs[i];
		n_ended++;
	}
	if (dropped)
		horizon_passed = !TransactionIdIsValid(older_than) ||
			!TransactionIdPrecedes(GetOldestActiveTransactionId(), older_than);

	LWLockAcquire(marks->lock, LW_EXCLUSIVE);
	marks->checked_at = now;
	/* By id: another claim may have checked and shortened the list meanwhile. */
	for (int i = 0; i < marks->n_droppers; i++)
	{
		bool		ended = false;

		for (int j = 0; j < n_ended && !ended; j++)
			ended = TransactionIdEquals(marks->droppers[i], droppers[j]);
		if (ended)
			continue;
		marks->droppers[kept] = marks->droppers[i];
		marks->dropper_dbs[kept] = marks->dropper_dbs[i];
		kept++;
	}
	marks->n_droppers = kept;
	for (int j = 0; j < n_ended; j++)
	{
		bool		still = false;

		for (int i = 0; i < kept && !still; i++)
			still = marks->dropper_dbs[i] == dbs[j];
		if (!still)
			restart_marks_locked(dbs[j]);
	}
	if (dropped && horizon_passed && marks->dropped && marks->drops == drops)
	{
		restart_marks_locked(InvalidOid);
		marks->older_than = InvalidTransactionId;
		marks->dropped = false;
	}
	LWLockRelease(marks->lock);
}

static void
marks_xact_callback(XactEvent event, void *arg)
{
	if (n_noted == 0 && !noted_all)
	{
		/* an engine insert whose statement trigger never fired (no trigger) */
		engine_insert = false;
		return;
	}
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			publish_noted();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
			if (did_publish)
				withdraw_published(event == XACT_EVENT_COMMIT);
			forget_noted();
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* Its commit will come from another backend, unseen here. */
			drop_marks_until_ended(GetTopTransactionIdIfAny());
			forget_noted();
			break;
		default:
			break;
	}
}

static void
ensure_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(marks_xact_callback, NULL);
		callback_registered = true;
	}
}

static void
note_ready(const char *activity, const VbClaimKey *key)
{
	if (strlen(activity) >= MARK_NAME_LEN)
		return;					/* never has a slot: claimed from the front */
	ensure_callback();
	for (int i = 0; i < n_noted; i++)
		if (strcmp(noted[i].activity, activity) == 0)
		{
			lower_to(&noted[i].key, key);
			return;
		}
	if (n_noted == NOTED_PER_XACT)
	{
		noted_all = true;
		return;
	}
	strlcpy(noted[n_noted].activity, activity, MARK_NAME_LEN);
	noted[n_noted].key = *key;
	n_noted++;
}

/*
 * The engine's inserts of nodes (state.c) note what they make ready
 * themselves, one key per activity and statement, and call this just
 * before: a row trigger on every inserted node cost start_runs a quarter
 * of its time per run.
 */
void
vb_claim_marks_engine_insert(void)
{
	if (marks == NULL)
		return;
	ensure_callback();			/* so that the flag never outlives the transaction */
	engine_insert = true;
}

/* This transaction makes a node of activity ready at key, before key. */
void
vb_claim_marks_note(const char *activity, const VbClaimKey *key)
{
	if (marks != NULL && activity != NULL)
		note_ready(activity, key);
}

/*
 * The triggers on nodes; they change nothing.
 *
 * nodes_note_ready: AFTER UPDATE FOR EACH ROW WHEN (NEW.status = 'ready'
 * AND NEW.activity IS NOT NULL): notes the row's activity and key.  After:
 * for a BEFORE row trigger PostgreSQL locks each updated row first, a
 * WAL record per completed task, though the trigger fires for none.
 *
 * nodes_note_inserts: AFTER INSERT FOR EACH STATEMENT: an insert that is
 * not the engine's (a restore's COPY, a superuser's INSERT) noted nothing,
 * so this transaction holds every mark of the database until it ends and
 * then lowers them to the front.
 */
PG_FUNCTION_INFO_V1(vectorbea_note_ready_node);
Datum
vectorbea_note_ready_node(PG_FUNCTION_ARGS)
{
	static Oid	columns_of = InvalidOid;
	static AttrNumber activity_att,
				priority_att,
				run_id_att;
	TriggerData *trigger = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	desc;
	bool		activity_null,
				priority_null,
				run_null;
	Datum		activity,
				priority,
				run_id;
	VbClaimKey	key;

	if (CALLED_AS_TRIGGER(fcinfo) && TRIGGER_FIRED_FOR_STATEMENT(trigger->tg_event) &&
		TRIGGER_FIRED_AFTER(trigger->tg_event) && TRIGGER_FIRED_BY_INSERT(trigger->tg_event))
	{
		if (!engine_insert && marks != NULL)
		{
			ensure_callback();
			noted_all = true;
		}
		engine_insert = false;
		return PointerGetDatum(NULL);
	}
	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigger->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigger->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigger->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("note_ready_node() must be fired AFTER UPDATE FOR EACH ROW or AFTER INSERT FOR EACH STATEMENT")));
	row = trigger->tg_newtuple;
	if (marks == NULL)
		return PointerGetDatum(NULL);

	desc = RelationGetDescr(trigger->tg_relation);
	if (columns_of != RelationGetRelid(trigger->tg_relation))
	{
		activity_att = SPI_fnumber(desc, "activity");
		priority_att = SPI_fnumber(desc, "priority");
		run_id_att = SPI_fnumber(desc, "run_id");
		if (activity_att <= 0 || priority_att <= 0 || run_id_att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("note_ready_node() fired on \"%s\", which is not vectorbea.nodes",
							RelationGetRelationName(trigger->tg_relation))));
		columns_of = RelationGetRelid(trigger->tg_relation);
	}
	activity = heap_getattr(row, activity_att, desc, &activity_null);
	priority = heap_getattr(row, priority_att, desc, &priority_null);
	run_id = heap_getattr(row, run_id_att, desc, &run_null);
	if (activity_null || priority_null || run_null)
		return PointerGetDatum(NULL);
	key.priority = DatumGetInt32(priority);
	memcpy(&key.run_id, DatumGetUUIDP(run_id), sizeof(pg_uuid_t));
	note_ready(TextDatumGetCString(activity), &key);
	return PointerGetDatum(NULL);
}

/*
 * Whether claims may start at the marks, dropped or not: shared memory is
 * there, the server is not in recovery, and this database's nodes table
 * has the triggers, enabled.
 */
static bool
marks_usable(void)
{
	Oid			nodes;
	Relation	rel;
	bool		enabled;
	int			found = 0;

	if (marks == NULL || RecoveryInProgress())
		return false;
	nodes = get_relname_relid("nodes", get_namespace_oid("vectorbea", true));
	if (!OidIsValid(nodes))
		return false;
	rel = RelationIdGetRelation(nodes);
	if (!RelationIsValid(rel))
		return false;
	if (rel->trigdesc)
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *t = &rel->trigdesc->triggers[i];

			if (strcmp(t->tgname, NOTE_TRIGGER) == 0 || strcmp(t->tgname, NOTE_INSERT_TRIGGER) == 0)
			{
				if (t->tgenabled == TRIGGER_DISABLED)
					break;
				found++;
			}
		}
	enabled = found == 2;
	RelationClose(rel);
	return enabled;
}

/*
 * The first ready node of activity at or after from, in the claim's order,
 * in a snapshot taken now; KEY_PAST_END when there is none.  Whether the
 * node is available yet does not matter: a retry waiting out its backoff
 * is ready work the mark must not pass.
 */
static VbClaimKey
first_ready_from(const char *activity, const VbClaimKey *from)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	VbClaimKey	found = KEY_PAST_END;
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, INT4OID, UUIDOID};

		plan = vb_prepare_opts("SELECT k.priority, k.run_id FROM ("
							   "  (SELECT n.priority, n.run_id FROM vectorbea.nodes n"
							   "    WHERE n.status = 'ready' AND n.activity = $1"
							   "      AND n.priority = $2 AND n.run_id >= $3"
							   "    ORDER BY n.priority DESC, n.run_id LIMIT 1)"
							   "  UNION ALL"
							   "  (SELECT n.priority, n.run_id FROM vectorbea.nodes n"
							   "    WHERE n.status = 'ready' AND n.activity = $1 AND n.priority < $2"
							   "    ORDER BY n.priority DESC, n.run_id LIMIT 1)) k"
							   " LIMIT 1", lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = CStringGetTextDatum(activity);
	args[1] = Int32GetDatum(from->priority);
	args[2] = UUIDPGetDatum(&from->run_id);
	/* not read-only: the scan takes a new snapshot, after the mark was read */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the first ready node of an activity");
	if (SPI_processed == 1)
	{
		found.priority = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull));
		memcpy(&found.run_id, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 2, &isnull)),
			   sizeof(pg_uuid_t));
	}
	return found;
}

/*
 * Moves slot's mark to found (a scan's result from a snapshot taken after
 * generation was read), lowered to the floor and to what committing
 * transactions published, unless another claim moved it first or a
 * transaction holds every slot.  Returns the mark.
 */
static VbClaimKey
move_mark(int slot, uint64 generation, const VbClaimKey *found, TimestampTz now)
{
	MarkSlot   *s = &marks->slots[slot];
	VbClaimKey	to = *found;
	VbClaimKey	mark;
	bool		held = false;

	LWLockAcquire(marks->lock, LW_EXCLUSIVE);
	if (s->in_use && s->generation == generation)
	{
		if (s->has_floor)
			lower_to(&to, &s->floor);
		for (int b = 0; b < MaxBackends && !held; b++)
		{
			Published  *p = &marks->published[b];

			if (p->database != MyDatabaseId)
				continue;
			held = p->all;
			for (int i = 0; i < p->n; i++)
				if (p->slot[i] == slot)
					lower_to(&to, &p->key[i]);
		}
		if (!held)
		{
			s->mark = to;
			s->has_floor = false;
			s->generation = ++marks->next_generation;
		}
		s->refreshed_at = now;
		s->last_used = ++marks->use_clock;
	}
	mark = s->mark;
	LWLockRelease(marks->lock);
	return mark;
}

/*
 * The start lowered to what this transaction made ready itself: its own
 * rows are in its claims' snapshots, but they lower the shared mark only
 * once committed (a claim after an expiry in the same call, or the
 * pipelined loop's claim after a completion that released dependents).
 */
static void
lower_to_own(const char *activity, VbClaimKey *start)
{
	if (noted_all)
	{
		*start = VB_CLAIM_KEY_FIRST;
		return;
	}
	for (int i = 0; i < n_noted; i++)
		if (strcmp(noted[i].activity, activity) == 0)
			lower_to(start, &noted[i].key);
}

void
vb_claim_mark_start(const char *activity, VbClaimKey *start)
{
	TimestampTz now;
	VbClaimKey	from = VB_CLAIM_KEY_FIRST;
	VbClaimKey	found;
	uint64		generation = 0;
	bool		due = false;
	int			slot;

	*start = VB_CLAIM_KEY_FIRST;
	if (strlen(activity) >= MARK_NAME_LEN || !marks_usable())
		return;
	now = GetCurrentTimestamp();
	if (!marks->started)
		start_marks();
	if (marks->dropped || marks->n_droppers > 0)
		restore_marks_if_ended(now);
	LWLockAcquire(marks->lock, LW_SHARED);
	slot = dropped_here() ? -1 : find_slot(activity, name_hash(activity));
	if (slot >= 0)
	{
		from = marks->slots[slot].mark;
		generation = marks->slots[slot].generation;
		due = TimestampDifferenceExceeds(marks->slots[slot].refreshed_at, now, REFRESH_EVERY_MS);
	}
	LWLockRelease(marks->lock);
	if (slot < 0)
		return;
	*start = from;

	/*
	 * Only a scan with a snapshot of its own, taken after the generation was
	 * read, can move the mark: not in a transaction that keeps one snapshot.
	 */
	if (due && !IsolationUsesXactSnapshot())
	{
		found = first_ready_from(activity, &from);
		if (vb_test_pause_claim_mark)	/* tests only: commits land here */
		{
			DirectFunctionCall1(pg_advisory_lock_int8, Int64GetDatum(VB_TEST_PAUSE_LOCK));
			DirectFunctionCall1(pg_advisory_unlock_int8, Int64GetDatum(VB_TEST_PAUSE_LOCK));
		}
		*start = move_mark(slot, generation, &found, now);
	}
	lower_to_own(activity, start);
}
