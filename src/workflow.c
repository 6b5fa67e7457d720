/*-------------------------------------------------------------------------
 *
 * workflow.c
 *	  Workflow definitions and the start of runs, by start_run and by run
 *	  nodes (child runs).
 *
 * define_workflow stores a validated definition as the next version of its
 * name; start_run validates again (settings may have changed), creates the
 * run, writes RUN_STARTED with every node normalised, and adds the nodes.
 * An idempotency key makes start_run safe to retry: the same key with the
 * same workflow and input returns the run it started the first time.
 *
 * IDENTIFICATION
 *	  src/workflow.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "funcapi.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "controls.h"
#include "events.h"
#include "duration.h"
#include "first_analyze.h"
#include "jsonb_util.h"
#include "notify.h"
#include "spi_util.h"
#include "state.h"
#include "validate.h"
#include "workspace_lock.h"
#include "workflow.h"
#include "tenants.h"

/* A run's budget above a billion USD is a typo, not a budget. */
#define MAX_BUDGET_USD	1e9

static void
check_workflow_name(const char *name)
{
	if (!vb_valid_name(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid workflow name \"%s\"", vb_short_text(name)),
				 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
						   VB_MAX_NAME_LEN)));
}

/*
 * A workflow belongs to the role that defined its first version: another
 * version changes what every new run of it does, so only that role (or a
 * role that has its privileges, superusers included) may add one.  The
 * caller is the role that called define_workflow (vb_caller).  Called
 * with the name's lock held.
 */
static void
check_workflow_owner(const char *name, Oid caller)
{
	Datum		args[1] = {CStringGetTextDatum(name)};
	Oid			types[1] = {TEXTOID};
	char	   *owner;
	Oid			owner_id;

	if (SPI_execute_with_args("SELECT created_by::text FROM vectorbea.workflows"
							  " WHERE name = $1 AND version = 1",
							  1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look up workflow owner");
	if (SPI_processed == 0)
		return;					/* a new workflow: the caller becomes its owner */
	owner = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	owner_id = get_role_oid(owner, true);
	if (OidIsValid(owner_id) ? has_privs_of_role(caller, owner_id) : superuser_arg(caller))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to add a version to workflow \"%s\"", name),
			 errdetail("Workflow \"%s\" belongs to role \"%s\", which defined its first version; role \"%s\" does not have its privileges.",
					   name, owner, GetUserNameFromId(caller, false)),
			 OidIsValid(owner_id) ?
			 errhint("Define it as \"%s\", GRANT \"%s\" TO \"%s\", or choose another workflow name.",
					 owner, owner, GetUserNameFromId(caller, false)) :
			 errhint("Role \"%s\" no longer exists: a superuser may add the version, or choose another workflow name.",
					 owner)));
}

/*
 * define_workflow(name text, definition jsonb) -> int
 */
static Datum
define_workflow_as_owner(PG_FUNCTION_ARGS)
{
	char	   *name;
	Jsonb	   *definition;
	Datum		args[4];
	Oid			types[4] = {TEXTOID, JSONBOID, TIMESTAMPTZOID, NAMEOID};
	bool		isnull;
	int32		version;
	Oid			caller = vb_caller();
	List	   *specs;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow name and definition must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	definition = PG_GETARG_JSONB_P(1);
	check_workflow_name(name);
	specs = vb_validate_definition(definition);

	args[0] = CStringGetTextDatum(name);
	args[1] = JsonbPGetDatum(definition);
	args[2] = TimestampTzGetDatum(vb_now());
	args[3] = DirectFunctionCall1(namein,
								  CStringGetDatum(GetUserNameFromId(caller, false)));

	SPI_connect();
	/* Concurrent definitions of one name take versions one after another. */
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock("
							  "pg_catalog.hashtext('vectorbea.workflow:' || $1))",
							  1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not lock workflow name");
	check_workflow_owner(name, caller);
	vb_check_child_workflows(name, vb_node_specs_json(specs), "workflow definition", true);
	if (SPI_execute_with_args("INSERT INTO vectorbea.workflows"
							  " (name, version, definition, created_at, created_by)"
							  " SELECT $1, coalesce(pg_catalog.max(version), 0) + 1, $2, $3, $4"
							  "   FROM vectorbea.workflows WHERE name = $1"
							  " RETURNING version",
							  4, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "vectorbea: could not store workflow");
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_INT32(version);
}

PG_FUNCTION_INFO_V1(vectorbea_define_workflow);
Datum
vectorbea_define_workflow(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, define_workflow_as_owner);
}

/*
 * validate_workflow(definition jsonb) -> jsonb: the nodes with every default
 * applied, or the error define_workflow would raise.
 */
PG_FUNCTION_INFO_V1(vectorbea_validate_workflow);
Datum
vectorbea_validate_workflow(PG_FUNCTION_ARGS)
{
	List	   *specs;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow definition must not be null")));
	specs = vb_validate_definition(PG_GETARG_JSONB_P(0));
	PG_RETURN_JSONB_P(vb_jsonb_from_cstring(vb_node_specs_full_json(specs)));
}

/*
 * A run deadline: a duration from the start ("2h") or a timestamp
 * ("2026-12-01T00:00:00Z"); it must lie in the future.
 */
static TimestampTz
parse_deadline(JsonbValue *val, TimestampTz at)
{
	char	   *text;
	int64		ms;
	TimestampTz deadline = 0;
	bool		parsed;

	if (val->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid run options: field \"deadline\" must be a duration or a timestamp"),
				 errdetail("Found %s.", vb_jsonb_type_name(val))));
	text = pnstrdup(val->val.string.val, val->val.string.len);
	if (vb_parse_duration(text, &ms))
	{
		deadline = at + ms * 1000;
		parsed = true;
	}
	else
		parsed = vb_parse_timestamp(text, &deadline);
	if (!parsed)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid run options: field \"deadline\" has an invalid value \"%s\"",
						vb_short_text(text)),
				 errhint("Give a duration from the start such as \"2h\", or a timestamp such as \"2026-12-01T00:00:00Z\".")));
	if (deadline <= at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid run options: field \"deadline\" is not in the future"),
				 errdetail("The deadline %s has passed.", vb_timestamp_iso(deadline))));
	return deadline;
}

/*
 * The deadline a run's stored options give a run that starts at `at` (a
 * fork): a duration counts from at, a timestamp is kept, whether or not it
 * has passed; 0 for none.  Stored options passed parse_deadline once.
 */
TimestampTz
vb_options_deadline(Jsonb *options, TimestampTz at)
{
	JsonbValue	val;
	char	   *text;
	int64		ms;
	TimestampTz deadline;

	if (!vb_jsonb_get(&options->root, "deadline", &val) || val.type != jbvString)
		return 0;
	text = pnstrdup(val.val.string.val, val.val.string.len);
	if (vb_parse_duration(text, &ms))
		return at + ms * 1000;
	return vb_parse_timestamp(text, &deadline) ? deadline : 0;
}

/*
 * Checks start_run's options; returns the run priority, and the deadline
 * (0 for none) in *deadline.
 */
static int
check_options(Jsonb *options, TimestampTz at, TimestampTz *deadline)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;
	int			priority = 0;

	if (!JsonContainerIsObject(&options->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid run options: they must be a JSON object")));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		JsonbValue	val;

		if (tok == WJB_BEGIN_OBJECT)
			depth++;
		if (tok != WJB_KEY || depth != 1)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (!vb_jsonb_get(&options->root, key, &val))
			continue;
		if (strcmp(key, "deadline") == 0)
			*deadline = parse_deadline(&val, at);
		else if (strcmp(key, "workspace") == 0)
		{
			if (val.type != jbvString ||
				!vb_valid_name(pnstrdup(val.val.string.val, val.val.string.len)))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid run options: field \"workspace\" must be a name"),
						 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
								   VB_MAX_NAME_LEN)));
		}
		else if (strcmp(key, "priority") == 0 || strcmp(key, "budget_tokens") == 0)
		{
			char	   *text = NULL;
			char	   *end;
			long		n = 0;
			bool		ok = (val.type == jbvNumeric);

			if (ok)
			{
				text = DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(val.val.numeric)));
				errno = 0;
				n = strtol(text, &end, 10);
				ok = (*end == '\0' && errno == 0);
			}
			if (strcmp(key, "priority") == 0)
			{
				if (!ok || n < -1000 || n > 1000)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid run options: field \"priority\" must be an integer from -1000 to 1000"),
							 errdetail("Found %s.", text ? vb_short_text(text) : vb_jsonb_type_name(&val))));
				priority = (int) n;
			}
			else if (!ok || n < 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid run options: field \"budget_tokens\" must be a non-negative integer"),
						 errdetail("Found %s.", text ? vb_short_text(text) : vb_jsonb_type_name(&val))));
		}
		else if (strcmp(key, "budget_usd") == 0)
		{
			double		usd = val.type == jbvNumeric ? vb_numeric_double(val.val.numeric) : -1;
			char	   *text = val.type == jbvNumeric ? vb_short_text(vb_jsonb_value_text(&val)) : NULL;

			if (!(usd >= 0 && usd <= MAX_BUDGET_USD))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid run options: field \"budget_usd\" must be a number from 0 to %.0f",
								MAX_BUDGET_USD),
						 errdetail("Found %s.", text ? text : vb_jsonb_type_name(&val))));
		}
		else if (strcmp(key, "on_budget") == 0)
		{
			char	   *policy = val.type == jbvString ?
				pnstrdup(val.val.string.val, val.val.string.len) : NULL;

			if (policy == NULL || (strcmp(policy, "fail") != 0 && strcmp(policy, "pause") != 0))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid run options: field \"on_budget\" must be \"fail\" or \"pause\""),
						 errdetail("Found %s.", vb_short_text(vb_jsonb_value_text(&val)))));
			/* A 0.1.0 schema has no paused runs: the pause would fail at the budget. */
			if (strcmp(policy, "pause") == 0 && !vb_waits_available())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("invalid run options: field \"on_budget\" uses \"pause\", which this database's vectorbea does not have yet"),
						 errhint("Run ALTER EXTENSION vectorbea UPDATE, or use \"on_budget\": \"fail\".")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid run options: unknown field \"%s\"", vb_short_text(key)),
					 errdetail("Allowed fields: workspace, priority, budget_usd, budget_tokens, on_budget, deadline.")));
	}
	return priority;
}

/* The workspace a start's options name ("default" when they name none). */
static const char *
options_workspace(Jsonb *options)
{
	JsonbValue	w;

	if (vb_jsonb_get(&options->root, "workspace", &w) && w.type == jbvString)
		return pnstrdup(w.val.string.val, w.val.string.len);
	return "default";
}

/*
 * The conflict target of a run's insert: a key is its workspace's own (one
 * tenant's key neither finds nor blocks another's run); a 0.1.0 schema,
 * before ALTER EXTENSION UPDATE, knows only keys unique over all runs.
 */
#define KEY_CONFLICT_020 " ON CONFLICT (workspace, idempotency_key) DO NOTHING RETURNING id"
#define KEY_CONFLICT_010 " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"

/*
 * Returns the run of workspace that an earlier start with this key
 * created, or throws.
 */
static Datum
existing_run(const char *key, const char *workspace, const char *workflow, Jsonb *input)
{
	/* [1]: keys are per workspace (0.2.0); [0]: one key space (0.1.0) */
	static SPIPlanPtr plans[2] = {NULL, NULL};
	bool		keys_per_workspace = vb_waits_available();
	Datum		args[4] = {CStringGetTextDatum(key), CStringGetTextDatum(workflow),
	JsonbPGetDatum(input), CStringGetTextDatum(workspace)};
	bool		isnull;
	bool		same;
	Datum		id;

	if (plans[keys_per_workspace] == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID};

		plans[keys_per_workspace] =
			vb_prepare(psprintf("SELECT id, workflow = $2 AND input = $3, workflow"
								"  FROM vectorbea.runs WHERE idempotency_key = $1%s",
								keys_per_workspace ? " AND workspace = $4" : ""),
					   keys_per_workspace ? 4 : 3, types);
	}
	if (SPI_execute_plan(plans[keys_per_workspace], args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "vectorbea: run with idempotency key \"%s\" vanished", key);
	same = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key \"%s\" was already used for a different run", vb_short_text(key)),
				 strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), workflow) == 0 ?
				 errdetail("The key belongs to a run of workflow \"%s\" with a different input.", workflow) :
				 errdetail("The key belongs to a run of workflow \"%s\", not \"%s\".",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), workflow),
				 errhint("Use a new key for a new run; reuse a key only to retry the same start. "
						 "The run is: SELECT id FROM vectorbea.runs WHERE idempotency_key = %s AND workspace = %s.",
						 quote_literal_cstr(key), quote_literal_cstr(workspace))));
	id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return id;
}

/*
 * The head of a RUN_STARTED's data: the workflow, its version and the
 * run's input, then its options and idempotency key when it has them (an
 * empty options object and no key are left out, as a spec leaves out its
 * defaults: docs/concepts.md).  The caller appends the rest and the brace.
 */
void
vb_run_started_head(StringInfo data, const char *workflow, int version,
					const char *input_json, const char *options_json, const char *key)
{
	appendStringInfoString(data, "{\"workflow\":");
	vb_append_json_string(data, workflow);
	appendStringInfo(data, ",\"version\":%d,\"input\":%s", version, input_json);
	if (strcmp(options_json, "{}") != 0)
		appendStringInfo(data, ",\"options\":%s", options_json);
	if (key)
	{
		appendStringInfoString(data, ",\"idempotency_key\":");
		vb_append_json_string(data, key);
	}
}

/*
 * Creates a run of version `version` of workflow (0: the latest) inside
 * SPI: the row, RUN_STARTED with every node normalised, and the nodes.  A
 * child run names its parent's run node (parent_run, parent_node); its
 * RUN_STARTED says so.  Returns false, with the earlier run's id in
 * *run_id, when key was used before for the same start; true with the new
 * run's id (run_id, when not all zero, is the id to use).
 */
bool
vb_create_run(const char *workflow, int version, Jsonb *input, Jsonb *options,
			  const char *key, int priority, TimestampTz deadline,
			  pg_uuid_t *parent_run, const char *parent_node, pg_uuid_t *run_id,
			  TimestampTz at)
{
	static const pg_uuid_t no_id;
	static SPIPlanPtr lookup_plan = NULL;
	static SPIPlanPtr insert_plans[2];	/* [on a 0.2.0 schema] */
	static SPIPlanPtr child_insert_plan = NULL;
	SPIPlanPtr	plan;
	Datum		args[11];
	char		nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[11] = {UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TEXTOID,
	INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, UUIDOID, TEXTOID};
	bool		isnull;
	Jsonb	   *definition;
	List	   *specs;
	char	   *specs_json;
	VbRun		run;
	StringInfoData data;

	if (lookup_plan == NULL)
		lookup_plan = vb_prepare("SELECT version, definition FROM vectorbea.workflows"
								 " WHERE name = $1 AND ($2 = 0 OR version = $2)"
								 " ORDER BY version DESC LIMIT 1", 2, &types[1]);
	args[0] = CStringGetTextDatum(workflow);
	args[1] = Int32GetDatum(version);
	if (SPI_execute_plan(lookup_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: workflow lookup failed");
	if (SPI_processed == 0 && version == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", vb_short_text(workflow)),
				 errhint("Define it first with vectorbea.define_workflow().")));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" has no version %d", workflow, version),
				 errhint("SELECT version FROM vectorbea.workflows WHERE name = '%s' lists its versions.",
						 workflow)));
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	definition = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	specs = vb_validate_definition(definition);
	specs_json = vb_node_specs_json(specs);

	if (memcmp(run_id, &no_id, sizeof(pg_uuid_t)) == 0)
		memcpy(run_id, vb_uuid_v7(at), sizeof(pg_uuid_t));
	args[0] = UUIDPGetDatum(run_id);
	args[1] = CStringGetTextDatum(workflow);
	args[2] = Int32GetDatum(version);
	args[3] = JsonbPGetDatum(input);
	args[4] = JsonbPGetDatum(options);
	if (key)
		args[5] = CStringGetTextDatum(key);
	else
		nulls[5] = 'n';
	args[6] = Int32GetDatum(priority);
	args[7] = TimestampTzGetDatum(at);
	args[8] = TimestampTzGetDatum(deadline);
	if (deadline == 0)
		nulls[8] = 'n';
	if (parent_run)
	{
		args[9] = UUIDPGetDatum(parent_run);
		args[10] = CStringGetTextDatum(parent_node);
	}
	/*
	 * A 0.1.0 schema has no parent columns, and no run nodes to need them:
	 * the statement with them is prepared only when a child run starts.
	 */
	if (parent_run)
	{
		if (child_insert_plan == NULL)
			child_insert_plan = vb_prepare("INSERT INTO vectorbea.runs (id, workflow, workflow_version, input,"
										   "  options, idempotency_key, priority, created_at, workspace,"
										   "  budget_usd, budget_tokens, deadline, parent_run, parent_node)"
										   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
										   "  coalesce($5->>'workspace', 'default'),"
										   "  ($5->>'budget_usd')::numeric, ($5->>'budget_tokens')::bigint, $9, $10, $11)"
										   KEY_CONFLICT_020, 11, types);
		plan = child_insert_plan;
	}
	else
	{
		bool		v020 = vb_waits_available();

		if (insert_plans[v020] == NULL)
			insert_plans[v020] = vb_prepare(psprintf("%s%s",
													 "INSERT INTO vectorbea.runs (id, workflow, workflow_version, input,"
													 "  options, idempotency_key, priority, created_at, workspace,"
													 "  budget_usd, budget_tokens, deadline)"
													 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
													 "  coalesce($5->>'workspace', 'default'),"
													 "  ($5->>'budget_usd')::numeric, ($5->>'budget_tokens')::bigint, $9)",
													 v020 ? KEY_CONFLICT_020 : KEY_CONFLICT_010), 9, types);
		plan = insert_plans[v020];
	}
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "vectorbea: could not insert run");

	if (SPI_processed == 0)
	{
		Datum		id = existing_run(key, options_workspace(options), workflow, input);

		memcpy(run_id, DatumGetUUIDP(id), sizeof(pg_uuid_t));
		return false;
	}

	/* The row is new and invisible to others: no lock to take. */
	memset(&run, 0, sizeof(run));
	memcpy(&run.id, run_id, sizeof(pg_uuid_t));
	run.status = VB_RUN_RUNNING;
	run.workflow = pstrdup(workflow);
	run.workflow_version = version;
	run.created_at = at;
	run.priority = priority;

	initStringInfo(&data);
	vb_run_started_head(&data, workflow, version, JsonbToCString(NULL, &input->root, VARSIZE(input)),
						JsonbToCString(NULL, &options->root, VARSIZE(options)), key);
	if (parent_run)
	{
		appendStringInfo(&data, ",\"parent_run\":\"%s\",\"parent_node\":", vb_uuid_text(parent_run));
		vb_append_json_string(&data, parent_node);
	}
	appendStringInfo(&data, ",\"nodes\":%s}", specs_json);
	vb_event(&run, "RUN_STARTED", NULL, 0, data.data, at);
	vb_state_add_nodes(&run, specs_json, NULL, at);
	/* A run of a paused workspace starts paused (its starter holds the workspace lock). */
	(void) vb_pause_if_workspace_paused(&run, options_workspace(options), at);
	vb_run_save(&run, at);
	if (deadline != 0)
		vb_wake_scheduler(deadline);
	return true;
}

/*
 * start_run(workflow text, input jsonb, idempotency_key text, options jsonb)
 *   -> uuid
 */
static Datum
start_run_as_owner(PG_FUNCTION_ARGS)
{
	char	   *workflow;
	Jsonb	   *input;
	char	   *key = NULL;
	Jsonb	   *options;
	int			priority;
	TimestampTz at = vb_now();
	TimestampTz deadline = 0;
	pg_uuid_t	run_id;
	pg_uuid_t  *result;
	MemoryContext caller_cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow name must not be null")));
	workflow = text_to_cstring(PG_GETARG_TEXT_PP(0));
	input = PG_ARGISNULL(1) ? vb_jsonb_from_cstring("{}") : PG_GETARG_JSONB_P(1);
	if (!PG_ARGISNULL(2))
		key = text_to_cstring(PG_GETARG_TEXT_PP(2));
	options = PG_ARGISNULL(3) ? vb_jsonb_from_cstring("{}") : PG_GETARG_JSONB_P(3);

	if (!JsonContainerIsObject(&input->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run input must be a JSON object"),
				 errhint("Wrap the value: '{\"value\": ...}'.")));
	vb_check_payload_size(input, "the run input");
	if (key && (key[0] == '\0' || pg_mbstrlen(key) > 512))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must be 1 to 512 characters long"),
				 errdetail("Found %d characters.", pg_mbstrlen(key))));
	priority = check_options(options, at, &deadline);

	SPI_connect();
	vb_require_workspace(options_workspace(options), "start runs in");
	vb_workspace_share(options_workspace(options));
	memset(&run_id, 0, sizeof(run_id));
	(void) vb_create_run(workflow, 0, input, options, key, priority, deadline, NULL, NULL,
						 &run_id, at);
	/* Starts grow the tables as claims do: first_analyze.c. */
	if (vb_first_analyze_wanted())
		vb_wake_scheduler(at);
	result = MemoryContextAlloc(caller_cxt, sizeof(pg_uuid_t));
	memcpy(result, &run_id, sizeof(pg_uuid_t));
	SPI_finish();
	PG_RETURN_UUID_P(result);
}

PG_FUNCTION_INFO_V1(vectorbea_start_run);
Datum
vectorbea_start_run(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, start_run_as_owner);
}

#define MAX_RUNS_PER_CALL 10000

/* Whether a definition has a node that the engine starts as soon as its run starts. */
static bool
starts_engine_nodes(const char *specs_json)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {CStringGetTextDatum(specs_json)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = vb_prepare("SELECT EXISTS (SELECT FROM pg_catalog.jsonb_to_recordset($1::jsonb)"
						  "                 AS s(activity text, depends_on text[])"
						  "                WHERE s.activity IS NULL"
						  "                  AND coalesce(pg_catalog.cardinality(s.depends_on), 0) = 0)",
						  1, types);
	}
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read a definition's nodes");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

typedef struct KeyAt
{
	const char *key;
	int			at;
} KeyAt;

static int
key_at_cmp(const void *a, const void *b)
{
	const KeyAt *x = a;
	const KeyAt *y = b;
	int			c = strcmp(x->key, y->key);

	return c != 0 ? c : (x->at > y->at) - (x->at < y->at);
}

/*
 * For each input of a start_runs call, the first input with the same key
 * (itself when none came before, or when it has no key), found by sorting
 * once: a call may carry 10,000 keys.
 */
static int *
first_with_same_key(char **keys, int n)
{
	int		   *first = palloc(sizeof(int) * Max(n, 1));
	KeyAt	   *sorted = palloc(sizeof(KeyAt) * Max(n, 1));
	int			m = 0;

	for (int i = 0; i < n; i++)
	{
		first[i] = i;
		if (keys[i])
			sorted[m++] = (KeyAt) {keys[i], i};
	}
	qsort(sorted, m, sizeof(KeyAt), key_at_cmp);
	for (int k = 1; k < m; k++)
		if (strcmp(sorted[k].key, sorted[k - 1].key) == 0)
			first[sorted[k].at] = first[sorted[k - 1].at];
	return first;
}

/*
 * The earlier input of this start_runs call that has input i's key, or -1.
 * The same start again takes its run; another input is refused here, by
 * position: the run the key would find is this call's own, gone with the
 * error, so "already used by run X" would send the user to nothing.
 */
static int
key_given_before(char **keys, Jsonb **inputs, int *first, int i, int n)
{
	int			j = first[i];

	if (j == i)
		return -1;
	if (!DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(inputs[j]),
										  JsonbPGetDatum(inputs[i]))))
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key \"%s\" is given twice with different inputs",
						vb_short_text(keys[i])),
				 errdetail("Run inputs %d and %d of %d have that key.", j + 1, i + 1, n),
				 errhint("Give each run its own key; repeat a key only with the same input.")));
	return j;
}

/*
 * The runs of start_runs whose keys were not used before, created together:
 * one INSERT of the runs, one of their RUN_STARTED events, one of their
 * nodes.  ids[i] is filled for every input; those whose key was used
 * before get the earlier run (existing_run).
 *
 * The runs are inserted with the counters they have once started (one
 * event, every node of the definition open), so nothing writes them a
 * second time: an UPDATE of the new rows cost start_runs a second version
 * of every run and a join with runs whose plan, made while the table was
 * small, scanned all of it, 42 % of its time in bench/run starts.  The
 * counters the event and node inserts keep in memory must agree: a start
 * that writes more (gates, engine nodes) takes the one-by-one path.
 */
static void
create_runs_together(const char *workflow, int version, const char *specs_json, Jsonb **inputs,
					 char **keys, int *first, int n, Jsonb *options, int priority,
					 TimestampTz deadline, pg_uuid_t *ids, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *id_items = palloc(sizeof(Datum) * n);
	Datum	   *input_items = palloc(sizeof(Datum) * n);
	Datum	   *key_items = palloc(sizeof(Datum) * n);
	bool	   *key_nulls = palloc(sizeof(bool) * n);
	bool	   *created = palloc0(sizeof(bool) * n);
	char	  **data = palloc(sizeof(char *) * n);
	VbRun	   *runs = palloc0(sizeof(VbRun) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			nruns = 0;
	int			nodes_per_run = JB_ROOT_COUNT(vb_jsonb_from_cstring(specs_json));
	Datum		args[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *options_text = JsonbToCString(NULL, &options->root, VARSIZE(options));

	if (plan == NULL)
	{
		Oid			types[10] = {UUIDARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TEXTOID, INT4OID,
		JSONBOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID};

		plan = vb_prepare_opts("INSERT INTO vectorbea.runs (id, workflow, workflow_version, input,"
							   "  options, idempotency_key, priority, created_at, workspace,"
							   "  budget_usd, budget_tokens, deadline, last_seq, open_nodes, node_count)"
							   " SELECT t.id, $4, $5, t.input, $6, t.key, $7, $8,"
							   "        coalesce($6->>'workspace', 'default'),"
							   "        ($6->>'budget_usd')::numeric, ($6->>'budget_tokens')::bigint,"
							   "        $9, 1, $10, $10"
							   "   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "                   pg_catalog.unnest($3)) WITH ORDINALITY AS t(id, input, key, ord)"
							   "  ORDER BY t.ord"
							   KEY_CONFLICT_020,
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	for (int i = 0; i < n; i++)
	{
		memcpy(&ids[i], vb_uuid_v7(at), sizeof(pg_uuid_t));
		id_items[i] = UUIDPGetDatum(&ids[i]);
		input_items[i] = JsonbPGetDatum(inputs[i]);
		key_items[i] = keys[i] ? CStringGetTextDatum(keys[i]) : (Datum) 0;
		key_nulls[i] = keys[i] == NULL;
	}
	args[0] = PointerGetDatum(construct_array(id_items, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = PointerGetDatum(construct_array(input_items, n, JSONBOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(key_items, key_nulls, 1, dims, lbs, TEXTOID, -1,
												 false, TYPALIGN_INT));
	args[3] = CStringGetTextDatum(workflow);
	args[4] = Int32GetDatum(version);
	args[5] = JsonbPGetDatum(options);
	args[6] = Int32GetDatum(priority);
	args[7] = TimestampTzGetDatum(at);
	args[8] = TimestampTzGetDatum(deadline);
	if (deadline == 0)
		nulls[8] = 'n';
	args[9] = Int32GetDatum(nodes_per_run);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "vectorbea: could not insert runs");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));

		for (int i = 0; i < n; i++)
			if (!created[i] && memcmp(&ids[i], id, sizeof(pg_uuid_t)) == 0)
			{
				created[i] = true;
				break;
			}
	}

	for (int i = 0; i < n; i++)
	{
		StringInfoData d;

		if (!created[i])
		{
			int			j = key_given_before(keys, inputs, first, i, n);

			if (j >= 0)
			{
				memcpy(&ids[i], &ids[j], sizeof(pg_uuid_t));
				continue;
			}
			/* Its key was used before: the earlier run, or an error. */
			memcpy(&ids[i], DatumGetUUIDP(existing_run(keys[i], options_workspace(options),
														workflow, inputs[i])),
				   sizeof(pg_uuid_t));
			continue;
		}
		memcpy(&runs[nruns].id, &ids[i], sizeof(pg_uuid_t));
		runs[nruns].status = VB_RUN_RUNNING;
		runs[nruns].workflow = (char *) workflow;
		runs[nruns].workflow_version = version;
		runs[nruns].created_at = at;
		runs[nruns].priority = priority;
		initStringInfo(&d);
		vb_run_started_head(&d, workflow, version,
							JsonbToCString(NULL, &inputs[i]->root, VARSIZE(inputs[i])),
							options_text, keys[i]);
		appendStringInfo(&d, ",\"nodes\":%s}", specs_json);
		data[nruns] = d.data;
		nruns++;
	}
	vb_event_first_of_new_runs(runs, nruns, "RUN_STARTED", data, at);
	vb_state_add_nodes_to_new_runs(runs, nruns, specs_json, at);
	for (int i = 0; i < nruns; i++)
		if (runs[i].last_seq != 1 || runs[i].open_nodes != nodes_per_run ||
			runs[i].node_count != nodes_per_run)
			elog(ERROR, "vectorbea: a new run of the set path counts %lld events and %d open "
				 "of %d nodes, not 1 and %d", (long long) runs[i].last_seq,
				 runs[i].open_nodes, runs[i].node_count, nodes_per_run);
	if (deadline != 0 && nruns > 0)
		vb_wake_scheduler(deadline);
}

/*
 * start_runs(workflow text, inputs jsonb[], idempotency_keys text[],
 *            options jsonb) -> SETOF uuid
 *
 * start_run for many inputs of one workflow, with the same options, in one
 * call and one transaction: one run per input, returned in the order of
 * the inputs (WITH ORDINALITY pairs them).  A key used before returns its
 * run, as start_run does.  The runs are created together (create_runs_
 * together) unless their workflow starts an engine node at once or their
 * workspace is paused: then one by one, as start_run creates them.
 */
static Datum
start_runs_as_owner(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz at = vb_now();
	TimestampTz deadline = 0;
	char	   *workflow;
	ArrayType  *input_array;
	Datum	   *input_items;
	bool	   *input_nulls;
	Jsonb	  **inputs;
	char	  **keys;
	Jsonb	   *options;
	int			n;
	int			priority;
	int			version;
	bool		isnull;
	char	   *specs_json;
	pg_uuid_t  *ids;
	int		   *first;
	const char *workspace;
	char	   *reason;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow and inputs must not be null")));
	workflow = text_to_cstring(PG_GETARG_TEXT_PP(0));
	input_array = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(input_array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("inputs must be a one-dimensional array"),
				 errdetail("Found %d dimensions.", ARR_NDIM(input_array))));
	deconstruct_array(input_array, JSONBOID, -1, false, TYPALIGN_INT, &input_items, &input_nulls, &n);
	if (n > MAX_RUNS_PER_CALL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("start_runs starts at most %d runs per call", MAX_RUNS_PER_CALL),
				 errdetail("Found %d inputs.", n),
				 errhint("Start them in several calls.")));
	inputs = palloc(sizeof(Jsonb *) * Max(n, 1));
	keys = palloc0(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (input_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("input %d of %d is null", i + 1, n),
					 errhint("Pass '{}' for a run without input.")));
		inputs[i] = DatumGetJsonbP(input_items[i]);
		if (!JsonContainerIsObject(&inputs[i]->root))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("run input %d of %d must be a JSON object", i + 1, n),
					 errhint("Wrap the value: '{\"value\": ...}'.")));
		vb_check_payload_size(inputs[i], psprintf("run input %d of %d", i + 1, n));
	}
	if (!PG_ARGISNULL(2))
	{
		ArrayType  *key_array = PG_GETARG_ARRAYTYPE_P(2);
		Datum	   *key_items;
		bool	   *key_nulls;
		int			nkeys;

		deconstruct_array(key_array, TEXTOID, -1, false, TYPALIGN_INT, &key_items, &key_nulls, &nkeys);
		if (ARR_NDIM(key_array) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("idempotency_keys must be a one-dimensional array"),
					 errdetail("Found %d dimensions.", ARR_NDIM(key_array)),
					 errhint("Pass one key per input, in the order of inputs (NULL for none).")));
		if (nkeys != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("idempotency_keys has %d elements, inputs has %d", nkeys, n),
					 errhint("Pass one key per input, in the order of inputs (NULL for none).")));
		for (int i = 0; i < n; i++)
		{
			if (key_nulls[i])
				continue;
			keys[i] = TextDatumGetCString(key_items[i]);
			if (keys[i][0] == '\0' || pg_mbstrlen(keys[i]) > 512)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("idempotency key %d of %d must be 1 to 512 characters long", i + 1, n),
						 errdetail("Found %d characters.", pg_mbstrlen(keys[i]))));
		}
	}
	options = PG_ARGISNULL(3) ? vb_jsonb_from_cstring("{}") : PG_GETARG_JSONB_P(3);
	priority = check_options(options, at, &deadline);
	workspace = options_workspace(options);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));

	SPI_connect();
	vb_require_workspace(workspace, "start runs in");
	vb_workspace_share(workspace);
	{
		static SPIPlanPtr latest_plan = NULL;
		Datum		args[1] = {CStringGetTextDatum(workflow)};
		Oid			types[1] = {TEXTOID};

		if (latest_plan == NULL)
			latest_plan = vb_prepare_opts("SELECT version, definition FROM vectorbea.workflows"
										  " WHERE name = $1 ORDER BY version DESC LIMIT 1",
										  lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
		if (SPI_execute_plan(latest_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: workflow lookup failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("workflow \"%s\" does not exist", vb_short_text(workflow)),
					 errhint("Define it first with vectorbea.define_workflow().")));
		version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		specs_json = vb_node_specs_json(vb_validate_definition(
			DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull))));
	}
	/* No inputs start nothing, but an unknown workflow is refused all the same. */
	if (n == 0)
	{
		SPI_finish();
		return (Datum) 0;
	}
	first = first_with_same_key(keys, n);
	if (!starts_engine_nodes(specs_json) && !vb_workspace_paused(workspace, &reason, NULL))
		create_runs_together(workflow, version, specs_json, inputs, keys, first, n, options,
							 priority, deadline, ids, at);
	else
		for (int i = 0; i < n; i++)
		{
			int			j = key_given_before(keys, inputs, first, i, n);

			if (j >= 0)
			{
				memcpy(&ids[i], &ids[j], sizeof(pg_uuid_t));
				continue;
			}
			memset(&ids[i], 0, sizeof(pg_uuid_t));
			(void) vb_create_run(workflow, version, inputs[i], options, keys[i], priority, deadline,
								 NULL, NULL, &ids[i], at);
		}
	if (vb_first_analyze_wanted())
		vb_wake_scheduler(at);
	for (int i = 0; i < n; i++)
	{
		Datum		value = UUIDPGetDatum(&ids[i]);
		bool		null = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &null);
	}
	SPI_finish();
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(vectorbea_start_runs);
Datum
vectorbea_start_runs(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, start_runs_as_owner);
}
