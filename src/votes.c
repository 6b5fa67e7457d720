/*-------------------------------------------------------------------------
 *
 * votes.c
 *	  Quorums: a gate that needs quorum approvals out of its approvers.
 *
 * Each approver is an entry of the gate's approvers: a person, matched
 * with the decided_by of the UPDATE, or a role (an entry that names an
 * existing role), matched by membership of the deciding role only: naming
 * a role in decided_by does not cast its vote.  A decision counts for the
 * person it names, else for the first role entry the deciding role belongs
 * to that has not voted (its own name first), and is kept in
 * vectorbea.approval_votes, one row per entry, so an entry decides once:
 * a second UPDATE for it is refused, and so is a second vote of one role
 * through its memberships.  Every vote writes APPROVAL_VOTED.  The gate is approved when
 * quorum entries have approved, rejected as soon as the approvals cast
 * and the entries yet to vote cannot reach quorum; until then it stays
 * pending (the UPDATE's row keeps its old decision columns).
 *
 * Two approvers who decide at once update the same row: PostgreSQL's row
 * lock orders them, and the second sees the first's outcome, so the last
 * two votes decide the gate once.
 *
 * IDENTIFICATION
 *	  src/votes.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "vectorbea.h"
#include "clock.h"
#include "jsonb_util.h"
#include "spi_util.h"
#include "votes.h"

static char *
col_text(HeapTuple tup, TupleDesc desc, const char *name)
{
	return SPI_getvalue(tup, desc, SPI_fnumber(desc, name));
}

/*
 * A text[] column of a gate's row (approvers, approver_roles), as C
 * strings; *isnull (when asked) says whether it is NULL or absent.
 */
static List *
text_list_of(TupleDesc desc, HeapTuple tup, const char *column, bool *isnull)
{
	int			attno = SPI_fnumber(desc, column);
	bool		null = true;
	Datum		d = (Datum) 0;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *list = NIL;

	if (attno > 0)
		d = heap_getattr(tup, attno, desc, &null);
	if (isnull)
		*isnull = null;
	if (null)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			list = lappend(list, TextDatumGetCString(elems[i]));
	return list;
}

/* The approvers of a gate's row. */
static List *
approvers_of(TupleDesc desc, HeapTuple tup)
{
	return text_list_of(desc, tup, "approvers", NULL);
}

/*
 * Whether an entry of approvers is a role: one the gate recorded as a role
 * when it opened (approver_roles), so that a role dropped since is matched
 * by no one rather than by whoever writes its name in decided_by; a gate
 * without that record (opened before it existed) asks the catalog now.
 */
static bool
entry_is_role(const char *entry, List *roles, bool roles_unknown)
{
	ListCell   *lc;

	if (roles_unknown)
		return OidIsValid(get_role_oid(entry, true));
	foreach(lc, roles)
		if (strcmp(lfirst(lc), entry) == 0)
			return true;
	return false;
}

/*
 * The entry of the gate's approvers that the current role's decision, by
 * person decided_by, counts for; refuses a decider who is none of them.
 * Called with the decider's rights (membership is theirs).
 */
void
vb_find_voter(TupleDesc desc, HeapTuple oldtup, const char *decided_by, int64 id,
			  VbVoter *voter)
{
	List	   *approvers = approvers_of(desc, oldtup);
	bool		roles_unknown;
	List	   *roles = text_list_of(desc, oldtup, "approver_roles", &roles_unknown);
	ListCell   *lc;
	StringInfoData list;

	voter->role = GetUserNameFromId(GetUserId(), false);
	voter->entry = NULL;
	voter->role_entries = NIL;
	/* A person by name; an entry that names a role is matched by membership only. */
	if (decided_by)
		foreach(lc, approvers)
			if (strcmp(lfirst(lc), decided_by) == 0 && !entry_is_role(lfirst(lc), roles, roles_unknown))
				voter->entry = lfirst(lc);
	if (voter->entry != NULL)
		return;
	/*
	 * Every role entry the decider belongs to, the one naming the deciding
	 * role itself first: which of them is still open is known only under
	 * the gate's row lock (vb_count_vote).
	 */
	foreach(lc, approvers)
	{
		Oid			role = get_role_oid(lfirst(lc), true);

		if (entry_is_role(lfirst(lc), roles, roles_unknown) && OidIsValid(role) &&
			is_member_of_role(GetUserId(), role))
		{
			if (strcmp(lfirst(lc), voter->role) == 0)
				voter->role_entries = lcons(lfirst(lc), voter->role_entries);
			else
				voter->role_entries = lappend(voter->role_entries, lfirst(lc));
		}
	}
	if (voter->role_entries != NIL)
	{
		voter->entry = linitial(voter->role_entries);
		return;
	}
	initStringInfo(&list);
	foreach(lc, approvers)
		appendStringInfo(&list, "%s%s", list.len ? ", " : "", vb_short_text(lfirst(lc)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s may not decide approval %ld: not one of its approvers",
					decided_by ? psprintf("\"%s\" (role %s)", vb_short_text(decided_by), voter->role) :
					psprintf("role %s", voter->role), (long) id),
			 errdetail("Approval %ld needs a quorum of: %s.", (long) id, list.data),
			 errhint("Set decided_by to an approver's name, or decide as a member of an approver role.")));
}

/*
 * The entry a decision matched by membership counts for: the first of
 * voter's role entries without a vote.  A role votes once on a gate: a
 * member of two approver roles, or of a group role and of its own entry,
 * would otherwise make a quorum alone.  Taking the first matching entry
 * whether or not it had voted made a gate whose group entry had voted
 * refuse its other members, and the superuser, for good: an undecidable
 * gate.  When every entry is taken, voter->entry stays the first, whose
 * vote the caller's insert then finds.
 */
static void
choose_role_entry(int64 id, VbVoter *voter)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	Datum	   *entries = palloc(sizeof(Datum) * list_length(voter->role_entries));
	ListCell   *lc;
	int			n = 0;

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTARRAYOID, TEXTOID};

		plan = vb_prepare("SELECT voter, decided_role::text = $3 FROM vectorbea.approval_votes"
						  " WHERE approval_id = $1 AND voter = ANY ($2)", lengthof(types), types);
	}
	foreach(lc, voter->role_entries)
		entries[n++] = CStringGetTextDatum(lfirst(lc));
	args[0] = Int64GetDatum(id);
	args[1] = PointerGetDatum(construct_array(entries, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = CStringGetTextDatum(voter->role);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the votes on approval %ld", (long) id);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("role %s has already voted on approval %ld, for approver \"%s\"",
							voter->role, (long) id,
							vb_short_text(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1))),
					 errdetail("A role counts once on a gate, for one of the approver roles it is a member of; the vote stands."),
					 errhint("SELECT * FROM vectorbea.approval_votes WHERE approval_id = %ld;", (long) id)));
	}
	foreach(lc, voter->role_entries)
	{
		bool		taken = false;

		for (uint64 i = 0; i < SPI_processed && !taken; i++)
			taken = strcmp(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
						   lfirst(lc)) == 0;
		if (!taken)
		{
			voter->entry = lfirst(lc);
			return;
		}
	}
}

/*
 * A person named by decided_by votes once on a gate, whichever entry the
 * vote would count for: a member of two approver roles who switched role
 * (SET ROLE) between two votes counted for both, a quorum made alone.
 * The vote for the same entry is left to the caller's insert.
 */
static void
refuse_second_vote_of(int64 id, const char *decided_by, const char *entry)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3] = {Int64GetDatum(id), CStringGetTextDatum(decided_by),
	CStringGetTextDatum(entry)};

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};

		plan = vb_prepare("SELECT voter FROM vectorbea.approval_votes"
						  " WHERE approval_id = $1 AND decided_by = $2 AND voter <> $3 LIMIT 1",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the votes on approval %ld", (long) id);
	if (SPI_processed == 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("\"%s\" has already voted on approval %ld, for approver \"%s\"",
						vb_short_text(decided_by), (long) id,
						vb_short_text(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))),
				 errdetail("A person named by decided_by votes once on a gate, whatever roles they act in; the vote stands."),
				 errhint("SELECT * FROM vectorbea.approval_votes WHERE approval_id = %ld;", (long) id)));
}

/*
 * Records the vote of voter (status: approved or rejected) on a gate of a
 * locked run and writes APPROVAL_VOTED.  Returns true when the gate is now
 * decided (with the same status), false while it stays pending.
 */
bool
vb_count_vote(VbRun *run, TupleDesc desc, HeapTuple oldtup, HeapTuple newtup,
			  VbVoter *voter, const char *status, TimestampTz at)
{
	static SPIPlanPtr vote_plan = NULL;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		id = DatumGetInt64(heap_getattr(oldtup, SPI_fnumber(desc, "id"), desc, &isnull));
	int			quorum = atoi(col_text(oldtup, desc, "quorum"));
	int			entries = list_length(approvers_of(desc, oldtup));
	char	   *decided_by = col_text(newtup, desc, "decided_by");
	char	   *reason = col_text(newtup, desc, "reason");
	int64		approved;
	int64		rejected;
	bool		decided;
	StringInfoData ev;

	if (vote_plan == NULL)
	{
		Oid			types[7] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, NAMEOID, TEXTOID, TIMESTAMPTZOID};

		vote_plan = vb_prepare("WITH vote AS ("
							   "  INSERT INTO vectorbea.approval_votes"
							   "    (approval_id, voter, vote, decided_by, decided_role, reason, decided_at)"
							   "  VALUES ($1, $2, $3, $4, $5, $6, $7)"
							   "  ON CONFLICT (approval_id, voter) DO NOTHING RETURNING vote"
							   ")"
							   " SELECT (SELECT pg_catalog.count(*) FROM vote),"
							   "        pg_catalog.count(*) FILTER (WHERE v.vote = 'approved')"
							   "          + (SELECT pg_catalog.count(*) FROM vote WHERE vote = 'approved'),"
							   "        pg_catalog.count(*) FILTER (WHERE v.vote = 'rejected')"
							   "          + (SELECT pg_catalog.count(*) FROM vote WHERE vote = 'rejected')"
							   "   FROM vectorbea.approval_votes v WHERE v.approval_id = $1",
							   lengthof(types), types);
	}
	if (voter->role_entries != NIL)
		choose_role_entry(id, voter);
	if (decided_by != NULL)
		refuse_second_vote_of(id, decided_by, voter->entry);
	args[0] = Int64GetDatum(id);
	args[1] = CStringGetTextDatum(voter->entry);
	args[2] = CStringGetTextDatum(status);
	if (decided_by)
		args[3] = CStringGetTextDatum(decided_by);
	else
		nulls[3] = 'n';
	args[4] = DirectFunctionCall1(namein, CStringGetDatum(voter->role));
	if (reason)
		args[5] = CStringGetTextDatum(reason);
	else
		nulls[5] = 'n';
	args[6] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(vote_plan, args, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not record a vote on approval %ld", (long) id);
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("approver \"%s\" has already decided approval %ld", vb_short_text(voter->entry), (long) id),
				 errdetail("Each approver of a quorum decides once; the vote stands."),
				 errhint("SELECT * FROM vectorbea.approval_votes WHERE approval_id = %ld;", (long) id)));
	approved = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	rejected = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	decided = approved >= quorum || approved + (entries - approved - rejected) < quorum;

	initStringInfo(&ev);
	appendStringInfo(&ev, "{\"approval\":%ld,\"gate\":", (long) id);
	vb_append_json_string(&ev, col_text(oldtup, desc, "gate"));
	appendStringInfoString(&ev, ",\"approver\":");
	vb_append_json_string(&ev, voter->entry);
	appendStringInfo(&ev, ",\"vote\":\"%s\",\"by\":", status);
	vb_append_json_string(&ev, decided_by);
	appendStringInfoString(&ev, ",\"role\":");
	vb_append_json_string(&ev, voter->role);
	appendStringInfoString(&ev, ",\"reason\":");
	vb_append_json_string(&ev, reason);
	appendStringInfo(&ev, ",\"approved\":%ld,\"rejected\":%ld,\"quorum\":%d,\"approvers\":%d,"
					 "\"decided\":%s}",
					 (long) approved, (long) rejected, quorum, entries, decided ? "true" : "false");
	vb_event(run, "APPROVAL_VOTED", col_text(oldtup, desc, "node"), 0, ev.data, at);
	return decided;
}

/*
 * The votes on gate id, as a JSON array, for the decision's record (not
 * read-only: it must see the vote this statement has just added).
 */
char *
vb_votes_json(int64 id)
{
	Datum		args[1] = {Int64GetDatum(id)};
	Oid			types[1] = {INT8OID};

	if (SPI_execute_with_args("SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
							  "  'approver', voter, 'vote', vote, 'by', decided_by, 'role', decided_role)"
							  "  ORDER BY decided_at, voter), '[]')::text"
							  "  FROM vectorbea.approval_votes WHERE approval_id = $1",
							  1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the votes on approval %ld", (long) id);
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * The row an UPDATE that cast a vote leaves when the quorum is not decided
 * yet: the gate's old decision columns, so it stays pending.
 */
HeapTuple
vb_keep_pending(TupleDesc desc, HeapTuple oldtup, HeapTuple newtup)
{
	static const char *const kept[] = {"status", "reason", "decided_by", "decision", "output", "input"};
	int			cols[lengthof(kept)];
	Datum		vals[lengthof(kept)];
	bool		nulls[lengthof(kept)];

	for (int i = 0; i < (int) lengthof(kept); i++)
	{
		cols[i] = SPI_fnumber(desc, kept[i]);
		vals[i] = heap_getattr(oldtup, cols[i], desc, &nulls[i]);
	}
	return heap_modify_tuple_by_cols(newtup, desc, lengthof(kept), cols, vals, nulls);
}
