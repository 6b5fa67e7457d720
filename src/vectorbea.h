/*-------------------------------------------------------------------------
 *
 * vectorbea.h
 *	  Shared types, settings and cross-file prototypes of vectorbea.
 *
 * Every non-static symbol of the module carries the vb_ prefix, because all
 * loaded extensions share one symbol namespace.  SQL-callable functions are
 * named vectorbea_<sqlname>.
 *
 * Locking rule, relied on by every file that changes a run: a transaction
 * locks the run's row (vb_run_lock) before it changes or locks any of that
 * run's nodes or appends an event; heartbeat too, although it writes no
 * event, so that no transaction ever holds a node while waiting for its run.  The run row carries the per-run event sequence,
 * so holding it orders a run's events in commit order with no gaps.  Only
 * claim_tasks takes node rows first, and it never waits: it skips locked
 * nodes and locked runs alike, so it cannot be part of a deadlock.
 *
 * IDENTIFICATION
 *	  src/vectorbea.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef VECTORBEA_H
#define VECTORBEA_H

#include "postgres.h"

#include "executor/spi.h"
#include "storage/lwlock.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* SQLSTATE for "the lease presented is no longer the task's lease". */
#define ERRCODE_VB_LEASE_LOST	MAKE_SQLSTATE('V','B','0','0','1')

/*
 * Activity names starting with this prefix belong to the engine: llm nodes
 * carry VB_LLM_ACTIVITY, which only the scheduler may claim.
 */
#define VB_RESERVED_PREFIX		"vectorbea:"
#define VB_LLM_ACTIVITY			"vectorbea:llm"

/* Whether an activity name is the engine's; case does not make it another. */
static inline bool
vb_reserved_activity(const char *name)
{
	return pg_strncasecmp(name, VB_RESERVED_PREFIX, strlen(VB_RESERVED_PREFIX)) == 0;
}

/*
 * The most one completion or one provider answer may report: a billion
 * tokens and a million USD are far above any real call, and keep the sums
 * on a run far from numeric and bigint trouble.  Larger values are refused
 * as invalid, not booked.
 */
#define VB_MAX_USAGE_TOKENS		INT64CONST(1000000000)
#define VB_MAX_USAGE_USD		"1000000"

/* Free texts that people write into the history. */
#define VB_MAX_REASON_BYTES		4096	/* a decision's or a cancel's reason */
#define VB_MAX_DECIDED_BY_BYTES	256		/* who decided, as the application names them */

/* Limits on identifiers used in definitions. */
#define VB_MAX_NAME_LEN			128
#define VB_MAX_ATTEMPTS_LIMIT	1000

/* ---- settings (vectorbea.c) ---- */
extern int	vb_max_payload_kb;
extern int	vb_max_nodes_per_run;
extern bool vb_notify_tasks;
extern bool vb_notify_runs;
extern char *vb_databases;
extern char *vb_master_key_file;
extern int	vb_scheduler_idle_ms;
extern int	vb_llm_max_in_flight;
extern char *vb_llm_allowed_hosts;
extern int	vb_llm_request_timeout_ms;
extern int	vb_llm_connect_timeout_ms;
extern int	vb_llm_max_response_kb;

#define VB_VERSION				"0.2.0"

/* ---- shmem.c: the schedulers' shared state ---- */
#define VB_MAX_SCHEDULERS		16
#define VB_SCHEDULER_CHANNEL	"vectorbea_scheduler"

/* What the scheduler has done (sweep.c counts, shmem.c shows). */
typedef struct VbSweepCounters
{
	uint64		leases_expired;
	uint64		timeouts;
	uint64		retries_announced;
	uint64		deadlines;
	uint64		gates_expired;
	uint64		errors;
	char		last_error[256];
} VbSweepCounters;

typedef struct VbSchedulerSlot
{
	char		database[NAMEDATALEN];
	Oid			database_oid;	/* set once the scheduler has connected */
	int			pid;			/* 0 while no scheduler runs */
	char		state[32];		/* "starting", "waiting for extension", "idle", "working" */
	TimestampTz started_at;
	TimestampTz last_wake;
	TimestampTz next_due;		/* engine clock; DT_NOEND when nothing is due */
	bool		in_pass;		/* a pass is reading the tables right now */
	bool		wake_requested; /* a committed transaction added earlier work */
	int			connect_failures;	/* starts that did not reach the database */
	uint64		wakes;
	VbSweepCounters counters;	/* kept across restarts of the worker */
} VbSchedulerSlot;

typedef struct VbShared
{
	LWLock	   *lock;
	int			nslots;
	VbSchedulerSlot slots[VB_MAX_SCHEDULERS];
} VbShared;

extern VbShared *vb_shared;
extern void vb_shmem_install_hooks(void);
extern void vb_wake_scheduler(TimestampTz due);
extern void vb_announce_at_commit(const char *activity, TimestampTz available_at);
extern void vb_fill_slot_names(void);

/* ---- clock.c: the one engine clock, ids ---- */
extern TimestampTz vb_now(void);
extern pg_uuid_t *vb_uuid_v7(TimestampTz at);
extern char *vb_uuid_text(pg_uuid_t *uuid);
extern char *vb_timestamp_iso(TimestampTz ts);

/* ---- duration.c ---- */
extern bool vb_parse_duration(const char *text, int64 *ms);
extern char *vb_format_duration(int64 ms);

/* ---- jsonb_util.c: reading jsonb without a detour through text ---- */
extern bool vb_jsonb_get(JsonbContainer *obj, const char *key, JsonbValue *out);
extern List *vb_jsonb_object_keys(JsonbContainer *obj);
extern const char *vb_jsonb_type_name(JsonbValue *v);
extern char *vb_jsonb_value_text(JsonbValue *v);
extern Jsonb *vb_jsonb_from_cstring(const char *json);
extern double vb_numeric_double(Numeric n);
extern char *vb_short_text(const char *text);
extern void vb_check_payload_size(Jsonb *payload, const char *what);
extern void vb_check_text_size(const char *text, const char *what, int max_bytes);
extern void vb_append_json_string(StringInfo buf, const char *s);

/* ---- validate.c: definitions and spawn lists ---- */

/* A node after validation, with every default applied. */
typedef struct VbNodeSpec
{
	char	   *id;
	char	   *kind;
	char	   *activity;
	List	   *depends_on;		/* of char * */
	char	   *input_json;		/* normalised JSON text of "input" */
	int			max_attempts;
	bool		backoff_exponential;
	int64		initial_ms;
	int64		max_ms;
	double		multiplier;
	bool		jitter;
	int64		timeout_ms;		/* 0: no timeout */
	char	   *approval_json;	/* normalised "approval" of an approval node */
	char	   *llm_json;		/* normalised "llm" of an llm node */
} VbNodeSpec;

/* A run's existing nodes, as spawn validation needs them. */
typedef struct VbExistingNodes
{
	int			count;
	char	  **ids;
} VbExistingNodes;

/* What is being validated, for messages: "workflow definition", ... */
typedef struct VbChecker
{
	const char *what;
} VbChecker;

extern bool vb_valid_name(const char *s);
extern void vb_check_fields(VbChecker *chk, JsonbContainer *obj, const char *const *allowed,
							const char *label, const char *field_path);
extern void vb_type_error(VbChecker *chk, const char *label, const char *field,
						  JsonbValue *v, const char *expected) pg_attribute_noreturn();
extern int	vb_get_int(VbChecker *chk, JsonbValue *v, const char *label, const char *field,
					   int min, int max);
extern bool vb_in_list(const char *s, const char *const *list);
extern char *vb_list_text(const char *const *list);
extern List *vb_validate_definition(Jsonb *definition);
extern List *vb_validate_spawn(Jsonb *spawn, Jsonb *definition,
							   const char *spawner, VbExistingNodes *existing);
extern char *vb_node_specs_json(List *specs);

/* ---- llm_spec.c, template.c: llm nodes' definitions and prompts ---- */
extern char *vb_validate_llm(const char *what, const char *label, JsonbValue *llm,
							 List *depends_on);
extern char *vb_template_check(const char *template, List *depends_on);
extern char *vb_template_render(const char *template, Jsonb *input, Jsonb *upstream,
								Jsonb *run_input, char **problem);

/* ---- events.c: the run lock and the history ---- */

/* A run locked by this transaction, with its counters kept in memory. */
typedef struct VbRun
{
	pg_uuid_t	id;
	char	   *status;
	char	   *workflow;
	int			workflow_version;
	int64		last_seq;
	int32		open_nodes;
	int32		node_count;
	int32		priority;
	TimestampTz created_at;
	bool		gates_pending;	/* an approval node became ready: open its gate */
} VbRun;

extern bool vb_run_lock(pg_uuid_t *run_id, VbRun *run);
extern bool vb_run_lock_for_task(int64 task_id, VbRun *run);
extern bool vb_run_try_lock(pg_uuid_t *run_id, VbRun *run);
extern int64 vb_event(VbRun *run, const char *type, const char *node,
					  int attempt, const char *data_json, TimestampTz at);
extern void vb_run_save(VbRun *run, TimestampTz at);
extern bool vb_event_type_reserved(const char *type);

/* ---- graph.c: nodes becoming ready, runs finishing ---- */
extern int	vb_insert_nodes(VbRun *run, const char *specs_json,
							const char *spawned_by, int priority, TimestampTz at);
extern void vb_release_dependents(VbRun *run, const char *node, TimestampTz at);
extern void vb_node_succeeded(VbRun *run, const char *node, int attempt,
							  const char *output_json, int64 duration_ms,
							  const char *usage_json, TimestampTz at);
extern void vb_finish_run_if_done(VbRun *run, TimestampTz at);
extern void vb_notify_task_ready(const char *activity);
extern void vb_notify_run_finished(VbRun *run);
extern void vb_end_run(VbRun *run, const char *status, const char *event_type,
					   const char *data_json, TimestampTz at);
extern void vb_close_open_nodes(VbRun *run, const char *idle_status,
								const char *running_status, TimestampTz at,
								char **closed_json, char **revoked_json);

/* ---- failure.c ---- */
extern const char *vb_fail_attempt(VbRun *run, int64 task_id, const char *err_class,
								   const char *error_json, bool retryable,
								   int64 retry_after_ms, TimestampTz at);
extern void vb_fail_run(VbRun *run, const char *node, const char *reason,
						TimestampTz at);

/* ---- claim.c ---- */
extern bool vb_scheduler_claiming;

/* ---- complete.c ---- */
extern bool vb_book_usage(VbRun *run, int64 tokens, const char *usd, char **detail_json);

/* ---- keys.c ---- */
extern char *vb_read_master_key(const char *path);
extern void vb_forget(char *secret);
extern const char *vb_pgcrypto_schema(void);

/* ---- lease.c: refusals of stale leases ---- */
extern void vb_refuse_lease(int64 task_id, pg_uuid_t *lease, const char *action);
extern int64 vb_interval_ms(Interval *iv, const char *what);

/* ---- subxact.c ---- */
extern ErrorData *vb_try_in_subxact(void (*fn) (void *), void *arg);

/* ---- SPI helpers (events.c) ---- */
extern SPIPlanPtr vb_prepare(const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr vb_prepare_opts(const char *sql, int nargs, Oid *argtypes,
								  int cursor_options);

/* ---- sweep.c: time-driven work ---- */
extern int	vb_expire_attempts(Datum activities, TimestampTz at, bool isolate,
							   VbSweepCounters *counters);
extern int	vb_fail_overdue_runs(TimestampTz at, VbSweepCounters *counters);
extern int	vb_announce_due(TimestampTz after, TimestampTz upto,
							VbSweepCounters *counters);
extern TimestampTz vb_next_due(TimestampTz now);
typedef enum VbSweepItemKind
{
	VB_ITEM_ATTEMPT,			/* nodes.id: an attempt past its lease */
	VB_ITEM_RUN,				/* a run past its deadline */
	VB_ITEM_GATE				/* approvals.id: a gate past its expiry */
} VbSweepItemKind;

extern uint64 vb_read_due_items(int id_column, int run_column, int64 **ids,
								pg_uuid_t **run_ids);
extern bool vb_sweep_item(void (*fn) (void *, int), void *arg, int i,
						  VbSweepCounters *counters, pg_uuid_t *run_id,
						  VbSweepItemKind kind, int64 item_id, TimestampTz at);

/* ---- approvals.c: human gates ---- */
extern int64 vb_deciding_approval;
extern bool vb_engine_writes_approvals;
extern void vb_open_gates(VbRun *run, TimestampTz at);
extern void vb_close_gates(VbRun *run, TimestampTz at);
extern int	vb_expire_gates(TimestampTz at, VbSweepCounters *counters);

/* ---- json.c: provider bodies and output schemas (jansson) ---- */
typedef struct VbLlmAnswer
{
	char	   *text;
	char	   *model;			/* as the provider reports it */
	int64		tokens_in;
	int64		tokens_out;
} VbLlmAnswer;

extern char *vb_json_chat_request(const char *provider, const char *model,
								  const char *system, int nmessages,
								  const char *const *roles,
								  const char *const *contents, int max_tokens,
								  const char *temperature);
extern bool vb_json_parse_answer(const char *provider, const char *body, size_t len,
								 VbLlmAnswer *answer, char **problem);
extern char *vb_json_error_message(const char *body, size_t len);
extern char *vb_json_check_answer(const char *schema_text, const char *answer,
								  char **json_out);
extern char *vb_json_member(const char *object_text, const char *key);

/* ---- allowlist.c: vectorbea.llm_allowed_hosts ---- */
struct sockaddr;
extern bool vb_allowlist_valid(const char *value, char **problem);
extern bool vb_allowlist_host_allowed(const char *host, int port, int default_port);
extern bool vb_allowlist_address_allowed(const struct sockaddr *sa, int default_port);

/* ---- http.c: libcurl multi driven by the scheduler's waits ---- */
typedef struct VbHttpCall
{
	struct VbHttpCall *next;	/* in the done queue */
	void	   *owner;			/* the caller's */
	void	   *easy;			/* CURL *, NULL once finished */
	struct curl_slist *headers;
	size_t		max_response;
	int			default_port;	/* of the URL's scheme, for the allow-list */
	/* results */
	int			result;			/* CURLcode */
	long		status;			/* HTTP status, 0 when none */
	int64		elapsed_ms;
	char	   *response;		/* malloc'd, NUL-terminated */
	size_t		response_len;
	size_t		response_cap;
	bool		too_large;
	bool		connected;		/* a connection was made */
	bool		refused_address;
	char		refused_text[64];
	char		retry_after[64];
	char		errbuf[256];	/* CURL_ERROR_SIZE */
} VbHttpCall;

extern void vb_http_init(void);
extern void vb_http_apply_settings(void);
extern char *vb_http_check_url(const char *url);
extern char *vb_http_base_url_problem(const char *url);
extern VbHttpCall *vb_http_start(const char *url, int nheaders, const char *const *headers,
								 const char *body, long timeout_ms, long connect_timeout_ms,
								 size_t max_response, void *owner);
extern void vb_http_abort(VbHttpCall *call);
extern void vb_http_free(VbHttpCall *call);
extern bool vb_http_has_done(void);
extern VbHttpCall *vb_http_next_done(void);
extern bool vb_http_wait(long max_ms);

/* ---- llm.c: llm nodes, run by the scheduler ---- */
extern void vb_llm_init(void);
extern void vb_llm_recover(VbSweepCounters *counters);
extern void vb_llm_check_leases(void);
extern void vb_llm_claim(VbSweepCounters *counters);
extern void vb_llm_send(void);
extern void vb_llm_finish(VbSweepCounters *counters);
extern bool vb_llm_busy(void);

/* ---- scheduler.c ---- */
extern void vb_register_schedulers(void);
extern List *vb_scheduler_databases(bool warn);

#endif							/* VECTORBEA_H */
