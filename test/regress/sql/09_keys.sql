-- Bring your own key: provider keys encrypted under a master key read from
-- a file, bound to their workspace and provider, never shown again.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- Master key files, written by the server's OS user in its data directory
-- (relative paths are read from there): mode 0600, except one left
-- readable by others (plain COPY TO makes files 0644).
DO $$
DECLARE
	dir text := current_setting('data_directory');
BEGIN
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', 'first-master-key-0123456789',
				   'umask 077 && cat > vb_master_1');
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', 'second-master-key-9876543210',
				   'umask 077 && cat > vb_master_2');
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', 'short',
				   'umask 077 && cat > vb_master_short');
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', repeat('k', 4097),
				   'umask 077 && cat > vb_master_long');
	EXECUTE format('COPY (SELECT %L) TO %L', 'readable-master-key-0123456789',
				   dir || '/vb_master_open');
END $$;

-- Without a master key nothing is stored.
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SET vectorbea.master_key_file = '/nonexistent/vb_master';
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SET vectorbea.master_key_file = 'vb_master_open';
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SET vectorbea.master_key_file = 'vb_master_short';
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
-- One character too long is refused, not cut to the first 4096.
SET vectorbea.master_key_file = 'vb_master_long';
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SET vectorbea.master_key_file = 'vb_master_1';

-- Bad input changes nothing.
SELECT vectorbea.set_provider_key('acme', 'mistral', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', 'openai', E'sk-test\r\nX-Evil: 1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', 'openai', ''); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123', 'ftp://models.example'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123', 'ftp://' || repeat('m', 300)); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('two words', 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', NULL, 'sk-test-123'); \echo SQLSTATE :SQLSTATE
-- A long value is cut in the message: its first characters and its length.
SELECT vectorbea.set_provider_key(repeat('w', 300), 'openai', 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', repeat('p', 300), 'sk-test-123'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.check_provider_key('acme', repeat('p', 300)); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS keys FROM vectorbea.provider_keys;

-- Stored encrypted; what can be seen is a fingerprint.
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-123');
SELECT vectorbea.set_provider_key('acme', 'anthropic', 'sk-ant-test-456', 'https://llm.internal.example/v1');
SELECT workspace, provider, base_url, fingerprint FROM vectorbea.provider_key_info ORDER BY provider;
SELECT fingerprint = left(encode(digest('sk-test-123', 'sha256'), 'hex'), 12) AS fingerprint_is_sha256
  FROM vectorbea.provider_keys WHERE provider = 'openai';
SELECT position('sk-test' IN encode(ciphertext, 'escape')) = 0 AS not_in_clear
  FROM vectorbea.provider_keys;
SELECT vectorbea.check_provider_key('acme', 'openai') AS decrypts;
-- Setting it again replaces it.
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-test-789');
SELECT fingerprint = left(encode(digest('sk-test-789', 'sha256'), 'hex'), 12) AS replaced
  FROM vectorbea.provider_keys WHERE provider = 'openai';
SELECT vectorbea.check_provider_key('acme', 'nobody'); \echo SQLSTATE :SQLSTATE

-- A ciphertext copied to another row does not decrypt there.
INSERT INTO vectorbea.provider_keys (workspace, provider, ciphertext, fingerprint, set_at)
	SELECT 'intruder', provider, ciphertext, fingerprint, set_at
	  FROM vectorbea.provider_keys WHERE workspace = 'acme' AND provider = 'openai';
SELECT vectorbea.check_provider_key('intruder', 'openai') AS copied_decrypts;
DELETE FROM vectorbea.provider_keys WHERE workspace = 'intruder';

-- Rotation re-encrypts every key under the new master key, in one go.
SELECT vectorbea.rotate_master_key('vb_master_1'); \echo SQLSTATE :SQLSTATE
-- A key that does not decrypt under the current master key is named, and
-- nothing is re-encrypted.
INSERT INTO vectorbea.provider_keys (workspace, provider, ciphertext, fingerprint, set_at)
	SELECT 'intruder', provider, ciphertext, fingerprint, set_at
	  FROM vectorbea.provider_keys WHERE workspace = 'acme' AND provider = 'openai';
SELECT vectorbea.rotate_master_key('vb_master_2'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.check_provider_key('acme', 'openai') AS still_under_old_master;
DELETE FROM vectorbea.provider_keys WHERE workspace = 'intruder';
SELECT vectorbea.rotate_master_key('vb_master_2') AS rotated;
SELECT vectorbea.check_provider_key('acme', 'openai') AS decrypts_with_old_master;
SET vectorbea.master_key_file = 'vb_master_2';
SELECT vectorbea.check_provider_key('acme', 'openai') AS openai_ok,
	   vectorbea.check_provider_key('acme', 'anthropic') AS anthropic_ok;

-- Ordinary roles: no keys, no key functions, no master key path.
GRANT USAGE ON SCHEMA vectorbea TO vb_plain_user;
GRANT SELECT ON vectorbea.provider_key_info TO vb_plain_user;
SET ROLE vb_plain_user;
SELECT ciphertext FROM vectorbea.provider_keys; \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('acme', 'openai', 'sk-mine', 'https://attacker.example'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.check_provider_key('acme', 'openai'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.rotate_master_key('/tmp/x'); \echo SQLSTATE :SQLSTATE
SHOW vectorbea.master_key_file; \echo SQLSTATE :SQLSTATE
SELECT workspace, provider, base_url FROM vectorbea.provider_key_info ORDER BY provider;
RESET ROLE;
REVOKE USAGE ON SCHEMA vectorbea FROM vb_plain_user;
REVOKE SELECT ON vectorbea.provider_key_info FROM vb_plain_user;
RESET vectorbea.master_key_file;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
