/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Bring-your-own-key storage: provider API keys encrypted with pgcrypto
 *	  under a master key read from a file.
 *
 * The master key is never the value of a setting (members of
 * pg_read_all_settings can read every setting): vectorbea.master_key_file
 * names a file that only the server's OS user may read, as PostgreSQL
 * requires of ssl_key_file.  A key is encrypted with pgp_sym_encrypt under
 * a passphrase made of the master key, the workspace and the provider, so a
 * ciphertext copied to another row does not decrypt there.
 *
 * Keys, passphrases and plaintexts travel only as bound parameters of SPI
 * statements, never in SQL text, so neither the server log nor
 * pg_stat_statements sees them; no message of this file contains one, and
 * no function returns a plaintext key.
 *
 * IDENTIFICATION
 *	  src/keys.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "http.h"
#include "jsonb_util.h"
#include "keys.h"
#include "settings.h"
#include "subxact.h"


#define MAX_KEY_LEN			4096
#define MAX_BASE_URL_LEN	2048
#define MIN_MASTER_KEY_LEN	16

static const char *const providers[] = {"openai", "anthropic", NULL};

/*
 * Reads a master key file, refusing one that others could read.  The key is
 * returned in memory the caller frees with vb_forget (which zeroes it).
 */
char *
vb_read_master_key(const char *path)
{
	struct stat st;
	FILE	   *f;
	char	   *buf;
	size_t		n;

	if (path == NULL || path[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("vectorbea.master_key_file is not set"),
				 errhint("Write a random key of at least %d characters to a file readable only by the server's OS user, and set vectorbea.master_key_file to its path.",
						 MIN_MASTER_KEY_LEN)));
	if (stat(path, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the master key file \"%s\": %m", path)));
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the master key file \"%s\" is not a regular file", path)));
	if (st.st_uid != geteuid() || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the master key file \"%s\" must be owned by the server's OS user and readable by it alone", path),
				 errhint("chown the file to the user the server runs as, and chmod 600 it.")));
	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open the master key file \"%s\": %m", path)));
	/* Room for a line end and one byte more: a longer key is refused, not cut. */
	buf = palloc0(MAX_KEY_LEN + 4);
	n = fread(buf, 1, MAX_KEY_LEN + 3, f);
	FreeFile(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (n < MIN_MASTER_KEY_LEN || n > MAX_KEY_LEN || strlen(buf) != n)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the master key in \"%s\" must be %d to %d characters of text",
						path, MIN_MASTER_KEY_LEN, MAX_KEY_LEN)));
	return buf;
}

void
vb_forget(char *secret)
{
	if (secret)
	{
		explicit_bzero(secret, strlen(secret));
		pfree(secret);
	}
}

/* Zeroes a text Datum that held a secret (a parameter's copy of it). */
static void
forget_text(Datum d)
{
	text	   *t = DatumGetTextPP(d);

	explicit_bzero(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/* The schema pgcrypto is installed in, quoted for SQL text. */
const char *
vb_pgcrypto_schema(void)
{
	if (SPI_execute("SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e"
					" JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					" WHERE e.extname = 'pgcrypto'", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pgcrypto is not installed"),
				 errhint("CREATE EXTENSION pgcrypto; vectorbea encrypts provider keys with it.")));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

static void
check_header_value(const char *what, const char *value, size_t max)
{
	size_t		len = strlen(value);

	if (len == 0 || len > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be 1 to %zu characters long", what, max)));
	for (const char *p = value; *p; p++)
		if (*p == '\r' || *p == '\n' || (unsigned char) *p < 0x20)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain control characters", what),
					 errdetail("Carriage returns and line feeds would let it forge HTTP headers.")));
}

static void
check_provider(const char *provider)
{
	for (const char *const *p = providers; *p; p++)
		if (strcmp(*p, provider) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown provider \"%s\"", vb_short_text(provider)),
			 errdetail("Providers: openai (any OpenAI-compatible endpoint, with base_url) and anthropic.")));
}

static void
check_base_url(const char *url)
{
	char	   *problem;

	check_header_value("base_url", url, MAX_BASE_URL_LEN);
	if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("base_url must start with http:// or https://"),
				 strchr(url, '@') ? 0 : errdetail("Found \"%s\".", vb_short_text(url))));
	problem = vb_http_base_url_problem(url);
	/* The URL is not repeated: it may hold a credential. */
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base_url: %s", problem),
				 errhint("Give the provider's API root, e.g. 'https://api.openai.com/v1' or 'http://127.0.0.1:11434/v1'.")));
}

/*
 * set_provider_key(workspace text, provider text, api_key text,
 *                  base_url text) -> void
 */
static Datum
set_provider_key_as_owner(PG_FUNCTION_ARGS)
{
	char	   *workspace;
	char	   *provider;
	char	   *api_key;
	char	   *base_url = NULL;
	char	   *master;
	const char *schema;
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace, provider and api_key must not be null")));
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	provider = text_to_cstring(PG_GETARG_TEXT_PP(1));
	api_key = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(3))
		base_url = text_to_cstring(PG_GETARG_TEXT_PP(3));

	vb_check_workspace_name(workspace, false);
	check_provider(provider);
	check_header_value("api_key", api_key, MAX_KEY_LEN);
	if (base_url)
		check_base_url(base_url);

	SPI_connect();
	master = vb_read_master_key(vb_master_key_file);
	schema = vb_pgcrypto_schema();
	args[0] = CStringGetTextDatum(workspace);
	args[1] = CStringGetTextDatum(provider);
	args[2] = CStringGetTextDatum(api_key);
	args[3] = CStringGetTextDatum(master);
	if (base_url)
		args[4] = CStringGetTextDatum(base_url);
	else
		nulls[4] = 'n';
	args[5] = TimestampTzGetDatum(vb_now());
	if (SPI_execute_with_args(psprintf(
									   "INSERT INTO vectorbea.provider_keys"
									   " (workspace, provider, ciphertext, base_url, fingerprint, set_at)"
									   " VALUES ($1, $2,"
									   "  %s.pgp_sym_encrypt($3, $4 || E'\\n' || $1 || E'\\n' || $2,"
									   "                     'cipher-algo=aes256'),"
									   "  $5, pg_catalog.left(pg_catalog.encode(%s.digest($3, 'sha256'), 'hex'), 12), $6)"
									   " ON CONFLICT (workspace, provider) DO UPDATE"
									   " SET ciphertext = EXCLUDED.ciphertext, base_url = EXCLUDED.base_url,"
									   "     fingerprint = EXCLUDED.fingerprint, set_at = EXCLUDED.set_at,"
									   "     set_by = EXCLUDED.set_by",
									   schema, schema),
							  lengthof(types), types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "vectorbea: could not store the provider key");
	forget_text(args[2]);
	forget_text(args[3]);
	vb_forget(master);
	explicit_bzero(api_key, strlen(api_key));
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(vectorbea_set_provider_key);
Datum
vectorbea_set_provider_key(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, set_provider_key_as_owner);
}

typedef struct KeyCheck
{
	const char *schema;
	Datum		args[3];		/* workspace, provider, master key */
	bool		ok;
} KeyCheck;

static void
decrypt_in_place(void *arg)
{
	KeyCheck   *kc = arg;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	bool		isnull;

	if (SPI_execute_with_args(psprintf("SELECT %s.digest(%s.pgp_sym_decrypt(ciphertext,"
									   "  $3 || E'\\n' || workspace || E'\\n' || provider),"
									   "  'sha256') IS NOT NULL"
									   "  FROM vectorbea.provider_keys"
									   " WHERE workspace = $1 AND provider = $2",
									   kc->schema, kc->schema),
							  3, types, kc->args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the provider key");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no key is stored for provider \"%s\" in workspace \"%s\"",
						vb_short_text(TextDatumGetCString(kc->args[1])),
						vb_short_text(TextDatumGetCString(kc->args[0])))));
	kc->ok = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

typedef struct KeyRead
{
	const char *schema;
	Datum		args[3];		/* workspace, provider, master key */
	char	   *plaintext;		/* NULL: no key stored */
} KeyRead;

static void
read_plaintext(void *arg)
{
	KeyRead    *kr = arg;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	text	   *t;
	bool		isnull;

	/* not read-only: the key as stored now, not at the scheduler step's start */
	if (SPI_execute_with_args(psprintf("SELECT %s.pgp_sym_decrypt(ciphertext,"
									   "  $3 || E'\\n' || workspace || E'\\n' || provider)"
									   "  FROM vectorbea.provider_keys"
									   " WHERE workspace = $1 AND provider = $2", kr->schema),
							  3, types, kr->args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the provider key");
	if (SPI_processed == 0)
		return;
	t = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	kr->plaintext = text_to_cstring(t);
	/* the result row's copy goes now; the caller zeroes the other */
	explicit_bzero(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/*
 * The plaintext of the key stored for provider in workspace, decrypted
 * under master; NULL when none is stored.  A key that does not decrypt
 * (stored under another master key, or its row changed by hand) is an
 * error that names it: pgcrypto's own ("Wrong key or corrupt data") names
 * nothing, and the scheduler records it for the operator.  The caller
 * zeroes the plaintext with vb_forget.
 */
char *
vb_provider_key_plaintext(const char *workspace, const char *provider, const char *master)
{
	KeyRead		kr = {0};
	ErrorData  *edata;

	kr.schema = vb_pgcrypto_schema();
	kr.args[0] = CStringGetTextDatum(workspace);
	kr.args[1] = CStringGetTextDatum(provider);
	kr.args[2] = CStringGetTextDatum(master);
	edata = vb_try_in_subxact(read_plaintext, &kr);
	explicit_bzero(VARDATA(DatumGetPointer(kr.args[2])), strlen(master));
	if (edata == NULL)
		return kr.plaintext;
	if (edata->sqlerrcode != ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION)
		ReThrowError(edata);	/* not pgcrypto's answer about the key */
	FreeErrorData(edata);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the key of provider \"%s\" in workspace \"%s\" does not decrypt under the current master key",
					provider, workspace),
			 errdetail("It was stored under another master key, or its row was changed by hand."),
			 errhint("Point vectorbea.master_key_file at the file it was stored under, or store it again with vectorbea.set_provider_key('%s', '%s', ...).",
					 workspace, provider)));
	return NULL;				/* keep the compiler quiet */
}

/*
 * check_provider_key(workspace text, provider text) -> boolean: whether the
 * stored key decrypts under the current master key, in its own row.  The
 * plaintext never leaves the statement.
 */
static Datum
check_provider_key_as_owner(PG_FUNCTION_ARGS)
{
	char	   *master;
	KeyCheck	kc = {0};
	ErrorData  *edata;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace and provider must not be null")));
	SPI_connect();
	master = vb_read_master_key(vb_master_key_file);
	kc.schema = vb_pgcrypto_schema();
	kc.args[0] = PG_GETARG_DATUM(0);
	kc.args[1] = PG_GETARG_DATUM(1);
	kc.args[2] = CStringGetTextDatum(master);

	/*
	 * A wrong passphrase makes pgcrypto throw; that is the answer "no".
	 * Anything else (a missing key, a lock timeout) is no answer.
	 */
	edata = vb_try_in_subxact(decrypt_in_place, &kc);
	/* Zeroed before any error leaves (the SQL's own copies are not ours). */
	forget_text(kc.args[2]);
	vb_forget(master);
	if (edata && edata->sqlerrcode != ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION)
		ReThrowError(edata);
	if (edata)
	{
		kc.ok = false;
		FreeErrorData(edata);
	}
	SPI_finish();
	PG_RETURN_BOOL(kc.ok);
}

PG_FUNCTION_INFO_V1(vectorbea_check_provider_key);
Datum
vectorbea_check_provider_key(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, check_provider_key_as_owner);
}

/*
 * Refuses a rotation that would fail half-way: pgcrypto's own error for a
 * key stored under another master key ("Wrong key or corrupt data") names
 * no key, and the operator would have to find it by hand.
 */
static void
check_every_key_decrypts(const char *schema, const char *master)
{
	KeyCheck	kc = {0};
	uint64		count;
	char	  **workspaces;
	char	  **providers;

	if (SPI_execute("SELECT workspace, provider FROM vectorbea.provider_keys ORDER BY 1, 2",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not list the provider keys");
	count = SPI_processed;
	workspaces = palloc(sizeof(char *) * Max(count, 1));
	providers = palloc(sizeof(char *) * Max(count, 1));
	for (uint64 i = 0; i < count; i++)
	{
		workspaces[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		providers[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	kc.schema = schema;
	kc.args[2] = CStringGetTextDatum(master);
	for (uint64 i = 0; i < count; i++)
	{
		ErrorData  *edata;

		kc.args[0] = CStringGetTextDatum(workspaces[i]);
		kc.args[1] = CStringGetTextDatum(providers[i]);
		edata = vb_try_in_subxact(decrypt_in_place, &kc);
		if (edata == NULL)
			continue;
		forget_text(kc.args[2]);
		if (edata->sqlerrcode != ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION)
			ReThrowError(edata);	/* not pgcrypto's answer about the key */
		FreeErrorData(edata);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the key of provider \"%s\" in workspace \"%s\" does not decrypt under the current master key",
						providers[i], workspaces[i]),
				 errdetail("A rotation re-encrypts every key or none; this one was stored under another master key, or its row was changed by hand."),
				 errhint("Store it again with vectorbea.set_provider_key('%s', '%s', ...), or delete its row, then rotate.",
						 workspaces[i], providers[i])));
	}
	forget_text(kc.args[2]);
}

/*
 * rotate_master_key(new_key_file text) -> integer: re-encrypts every stored
 * key under the master key in new_key_file, in one statement (and so one
 * transaction); returns how many.  Point vectorbea.master_key_file at the
 * new file right after.
 */
static Datum
rotate_master_key_as_owner(PG_FUNCTION_ARGS)
{
	char	   *old_master;
	char	   *new_master;
	const char *schema;
	Datum		args[2];
	Oid			types[2] = {TEXTOID, TEXTOID};
	uint64		n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("new_key_file must not be null")));
	SPI_connect();
	old_master = vb_read_master_key(vb_master_key_file);
	new_master = vb_read_master_key(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	/* Both keys are zeroed however this ends. */
	PG_TRY();
	{
		if (strcmp(old_master, new_master) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the new master key is the current one")));
		schema = vb_pgcrypto_schema();
		check_every_key_decrypts(schema, old_master);
		args[0] = CStringGetTextDatum(old_master);
		args[1] = CStringGetTextDatum(new_master);
		if (SPI_execute_with_args(psprintf("UPDATE vectorbea.provider_keys"
										   "   SET ciphertext = %s.pgp_sym_encrypt("
										   "         %s.pgp_sym_decrypt(ciphertext,"
										   "           $1 || E'\\n' || workspace || E'\\n' || provider),"
										   "         $2 || E'\\n' || workspace || E'\\n' || provider,"
										   "         'cipher-algo=aes256')",
										   schema, schema),
								  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not re-encrypt the provider keys");
		n = SPI_processed;
		forget_text(args[0]);
		forget_text(args[1]);
	}
	PG_FINALLY();
	{
		explicit_bzero(old_master, strlen(old_master));
		explicit_bzero(new_master, strlen(new_master));
	}
	PG_END_TRY();
	pfree(old_master);
	pfree(new_master);
	SPI_finish();
	PG_RETURN_INT32((int32) n);
}

PG_FUNCTION_INFO_V1(vectorbea_rotate_master_key);
Datum
vectorbea_rotate_master_key(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, rotate_master_key_as_owner);
}
