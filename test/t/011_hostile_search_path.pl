# A hostile search_path: a database owner who is not a superuser (dbo, who
# owns schema public through pg_database_owner) plants look-alikes in public
# of every function, aggregate and operator the engine's SQL names, each a
# better match than pg_catalog's for the engine's argument types (or the
# same signature, for when public comes first), each recording its call and
# trying ALTER ROLE dbo SUPERUSER when a superuser calls it.  Then every
# path of the scheduler, which works as the bootstrap superuser, is driven
# (deadline, attempt timeout, lease expiry, retry announce, gate reject,
# approve and escalate, llm success, failure and spawn, a run failing for
# good, a call left in doubt by a crash), and dbo calls the SECURITY DEFINER
# API with public first in its own search_path, first with the default
# search_path and then with dbo's "ALTER DATABASE ... SET search_path =
# public, pg_catalog".  No planted object may ever be called, and dbo must
# not become a superuser.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbPlants;
use VbTest;

my ($node, $base) = vb_llm_server('hostile', "restart_after_crash = on\n");
vb_store_key($node, 'default', 'openai', 'sk-test-hostile-0001', $base);
# From here on the test's own superuser sessions see pg_catalog only, so
# that nothing but the engine can reach a planted object.
$ENV{PGOPTIONS} = '-c search_path=pg_catalog';

sub sql { return $node->safe_psql('postgres', shift); }

# dbo's statements, with public first in its search_path.  They call the
# API and nothing else (no operator, no function by an unqualified name), so
# that dbo itself never calls what it planted.
my $dbo_conn = $node->connstr('postgres') . ' user=dbo';

sub dbo
{
	my $sql = shift;
	my ($rc, $out, $err) = $node->psql('postgres', "SET search_path = public, pg_catalog;\n" . $sql,
		connstr => $dbo_conn);
	diag("dbo's statement failed: $err\n$sql") if $rc != 0;
	return $out;
}

sub dbo_try
{
	my ($rc, $out, $err) = $node->psql('postgres', "SET search_path = public, pg_catalog;\n" . shift,
		connstr => $dbo_conn);
	return ($rc, $err);
}

sub settled
{
	my ($query, $want, $what, $timeout) = @_;
	ok(defined vb_wait_for($node, $query, $want, $timeout // 20), $what);
}

sub scheduler_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
}

# A new scheduler, so that no statement prepared before now is reused and
# the session settings of the database apply, as after any restart.
sub restart_scheduler
{
	my $old = scheduler_pid();
	sql(qq{SELECT pg_terminate_backend($old)});
	settled(qq{SELECT count(*) FROM pg_stat_activity
			   WHERE backend_type = 'vectorbea scheduler' AND pid <> $old}, '1',
		'the scheduler starts again');
	settled(q{SELECT state FROM vectorbea.scheduler_status()}, 'idle', 'and is idle');
}

# The planted calls since the counter was last reset.  A crash restart may
# advance a sequence that was used (it is logged ahead) but never one that
# was not, so 0 stays 0.
sub planted_calls
{
	return sql(q{SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.planted_calls});
}

sub reset_planted_calls { dbo(q{ALTER SEQUENCE public.planted_calls RESTART}); }

# Who called what since log id $since (the plants' own record).
sub planted_report
{
	my $since = shift;
	return sql(qq{SELECT count(*) || ' x ' || what || ' by ' || session_role || ' (superuser '
					|| superuser || ', ' || coalesce(backend, '?') || '): ' || coalesce(activity, '')
				   FROM public.planted_log WHERE id > $since
				  GROUP BY what, session_role, superuser, backend, activity
				  ORDER BY min(id)});
}

sub last_log_id { return sql(q{SELECT coalesce(max(id), 0) FROM public.planted_log}); }

# ---------------------------------------------------------------------------
# dbo: an ordinary login that owns the database, with the grants of a worker
# and of an application (docs/operations.md), and of an approver.
sql(q{CREATE ROLE dbo LOGIN NOSUPERUSER;
	  CREATE ROLE oncall;
	  ALTER DATABASE postgres OWNER TO dbo;
	  GRANT USAGE ON SCHEMA vectorbea TO dbo;
	  GRANT EXECUTE ON FUNCTION
		vectorbea.claim_tasks(text, text[], integer, interval),
		vectorbea.heartbeat(bigint, uuid, interval),
		vectorbea.save_checkpoint(bigint, uuid, jsonb),
		vectorbea.complete_task(bigint, uuid, jsonb, jsonb, jsonb),
		vectorbea.fail_task(bigint, uuid, jsonb, boolean),
		vectorbea.await_approval(bigint, uuid, text, jsonb, interval),
		vectorbea.append_event(uuid, text, jsonb, text),
		vectorbea.define_workflow(text, jsonb),
		vectorbea.validate_workflow(jsonb),
		vectorbea.start_run(text, jsonb, text, jsonb),
		vectorbea.cancel_run(uuid, text, boolean),
		vectorbea.timeline(uuid),
		vectorbea.replay(uuid, bigint),
		vectorbea.verify_run(uuid),
		vectorbea.clock(),
		vectorbea.scheduler_status(),
		vectorbea.run_due_work(),
		vectorbea.check_provider_key(text, text)
	  TO dbo;
	  GRANT SELECT ON vectorbea.workflows, vectorbea.runs, vectorbea.events, vectorbea.dead_letters,
					  vectorbea.model_prices, vectorbea.provider_key_info TO dbo;
	  GRANT SELECT, UPDATE (status, reason, decided_by) ON vectorbea.approvals TO dbo;});
is(sql(q{SELECT nspowner::regrole || ' ' || has_schema_privilege('dbo', 'public', 'CREATE')
			 || ' ' || (SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo')
		   FROM pg_namespace WHERE nspname = 'public'}),
	'pg_database_owner true false', 'dbo owns public through pg_database_owner, may create there, is no superuser');
my $crypto_schema = sql(q{SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'pgcrypto'});
diag("pgcrypto is installed in schema $crypto_schema");

# ---------------------------------------------------------------------------
# The names the engine's SQL calls, from the string literals of src/*.c
# (VbPlants.pm), and a supplement of common names.
my ($fn, $crypto) = vb_engine_names([ glob "$FindBin::Bin/../../src/*.c" ]);
ok($fn->{jsonb_agg} && $fn->{unnest} && $crypto->{pgp_sym_decrypt}, 'the scan finds the engine\'s calls');
$fn->{$_} = 1 for qw(now clock_timestamp format concat concat_ws lower upper length substr replace
  split_part string_agg sum avg abs random md5 array_length array_append array_position cardinality
  jsonb_set jsonb_typeof jsonb_array_length jsonb_build_array jsonb_each jsonb_each_text
  jsonb_object_keys jsonb_array_elements to_jsonb to_timestamp date_trunc date_part generate_series
  pg_notify lpad btrim position strpos);
my @ops = split / /, '= <> < <= > >= -> ->> #> #>> @> <@ ? || + - * / ~~';

# ---------------------------------------------------------------------------
# The plants (VbPlants.pm), each recording its call; in a superuser's
# session they make dbo a superuser.
vb_plant_prepare(\&dbo, 'dbo');
vb_plant_lookalikes(\&dbo, $fn, $crypto, \@ops);

my %planted = split /[|\n]/, sql(q{SELECT kind, count(*) FROM public.planted_objects GROUP BY kind});
diag(sprintf('planted: %d functions, %d aggregates, %d operators, over %d names; %d skipped',
	$planted{function} // 0, $planted{aggregate} // 0, $planted{operator} // 0,
	sql(q{SELECT count(DISTINCT name) FROM public.planted_objects}),
	sql(q{SELECT count(*) FROM public.planted_skipped})));
diag('their names: ' . sql(q{SELECT string_agg(DISTINCT name, ' ' ORDER BY name) FROM public.planted_objects}));
diag('skipped: ' . sql(q{SELECT string_agg(signature || ': ' || problem, E'\n' ORDER BY signature)
						   FROM public.planted_skipped}))
  if sql(q{SELECT count(*) FROM public.planted_skipped}) > 0;
cmp_ok(($planted{function} // 0) + ($planted{aggregate} // 0), '>=', 300, 'hundreds of functions and aggregates are planted');
cmp_ok($planted{operator} // 0, '>=', 500, 'hundreds of operators are planted');
is(sql(q{SELECT count(*) FROM public.planted_objects WHERE signature IN
		   ('jsonb_agg(text)', 'jsonb_object_agg(text, jsonb)', 'array_agg(text)', 'unnest(text[])',
			'quote_ident(name)', '*(bigint, interval)', '*(bigint, numeric)', '=(text[], text[])',
			'@>(text[], text[])', '||(text, jsonb)')}),
	'10', 'among them the better matches for the engine\'s calls');

# ---------------------------------------------------------------------------
# Positive controls: the plants win where public is searched, answer like
# the genuine objects, record their calls, and a superuser who calls one
# makes dbo a superuser.
my $before = planted_calls();
my $since = last_log_id();
is(dbo(q{SELECT jsonb_agg(x ORDER BY x) FROM (VALUES ('b'::text), ('a')) v(x);
		 SELECT unnest(ARRAY['c']::text[]);
		 SELECT 2::bigint * interval '1 ms', 3::bigint * 1.5::numeric;
		 SELECT quote_ident('a b'::name)}),
	qq{["a", "b"]\nc\n00:00:00.002|4.5\n"a b"}, 'control: the plants answer like pg_catalog');
cmp_ok(planted_calls() - $before, '>=', 5, 'control: and record their calls');
is(sql(qq{SELECT string_agg(DISTINCT what, ', ' ORDER BY what) FROM public.planted_log WHERE id > $since}),
	'aggregate jsonb_agg(text), aggregate jsonb_agg(text) (final), function quote_ident(name), '
	  . 'function unnest(text[]), operator *(bigint, interval), operator *(bigint, numeric)',
	'control: jsonb_agg, unnest, quote_ident and * are the plants');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 'f', 'control: dbo calling them gains nothing');
sql(q{SET search_path = public, pg_catalog; SELECT jsonb_agg(x) FROM (VALUES ('a'::text)) v(x)});
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 't',
	'control: a superuser calling one makes dbo a superuser');
sql(q{ALTER ROLE dbo NOSUPERUSER});

# ---------------------------------------------------------------------------
# The workflows, defined by dbo.
my %workflows = (
	h_deadline => '{"nodes": [{"id": "a", "activity": "h_dl_run"}, {"id": "c", "activity": "h_idle"},
		{"id": "b", "activity": "h_idle", "depends_on": ["a"]}]}',
	h_timeout => '{"nodes": [{"id": "t", "activity": "h_timeout", "timeout": "1h", "retry": {"max_attempts": 1}},
		{"id": "after", "activity": "h_idle", "depends_on": ["t"]}]}',
	h_lease => '{"nodes": [{"id": "l", "activity": "h_lease",
		"retry": {"max_attempts": 2, "backoff": "fixed", "initial": "1h", "jitter": false}}]}',
	h_retry => '{"nodes": [{"id": "r", "activity": "h_retry",
		"retry": {"max_attempts": 3, "backoff": "fixed", "initial": "1h", "jitter": false}}]}',
	h_reject => '{"nodes": [{"id": "g", "kind": "approval", "approval": {"gate": "reject", "timeout": "1h",
		"on_timeout": "reject", "approver_role": "dbo"}}, {"id": "after", "activity": "h_idle", "depends_on": ["g"]}]}',
	h_approve => '{"nodes": [{"id": "g", "kind": "approval", "approval": {"gate": "auto", "timeout": "1h",
		"on_timeout": "approve"}}, {"id": "g2", "kind": "approval", "depends_on": ["g"],
		"approval": {"gate": "human", "timeout": "1d", "approver_role": "dbo"}},
		{"id": "fin", "activity": "h_fin", "depends_on": ["g2"]}]}',
	h_escalate => '{"nodes": [{"id": "g", "kind": "approval", "approval": {"gate": "esc", "timeout": "1h",
		"on_timeout": "escalate", "approver_role": "dbo", "escalate_to": ["oncall"]}},
		{"id": "after", "activity": "h_idle", "depends_on": ["g"]}]}',
	h_plan => '{"nodes": [{"id": "plan", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-4o-mini",
		"prompt": "hostile plan {{run.input.phase}}", "allow_spawn": {"activities": ["h_extra"], "max_nodes": 1}}}]}',
	h_refused => '{"nodes": [{"id": "ask", "kind": "llm", "retry": {"max_attempts": 1}, "llm": {"provider": "openai",
		"model": "gpt-4o-mini", "prompt": "hostile refuse {{run.input.phase}}"}},
		{"id": "after", "activity": "h_idle", "depends_on": ["ask"]}]}',
	h_doubt => '{"nodes": [{"id": "slow", "kind": "llm", "retry": {"max_attempts": 2, "initial": "100ms", "jitter": false},
		"llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "hostile doubt {{run.input.phase}}"}}]}',
	h_await => '{"nodes": [{"id": "w", "activity": "h_await"}]}');
for my $name (sort keys %workflows)
{
	like(dbo(qq{SELECT vectorbea.validate_workflow('$workflows{$name}');
				SELECT vectorbea.define_workflow('$name', '$workflows{$name}')}), qr/^[\[{].*\n1$/s,
		"dbo validates and defines $name");
}
vb_fake_script(
	{ match => { contains => 'hostile plan' }, times => -1,
		text => vb_json()->encode({ plan => 'one more', spawn => [ { id => 'extra', activity => 'h_extra' } ] }) },
	{ match => { contains => 'hostile refuse' }, times => -1, status => 400, error_message => 'refused' });

sub start
{
	my ($p, $workflow, $options) = @_;
	return dbo(qq{SELECT vectorbea.start_run('$workflow', '{"phase": $p}', NULL, '${\($options // '{}')}')});
}

sub claim
{
	my ($activity, $lease) = @_;
	my ($id, $l) = split /\|/, dbo(qq{SELECT task_id, lease FROM vectorbea.claim_tasks('dbo-worker',
		ARRAY['$activity'], 1, '${\($lease // '5 minutes')}')});
	return ($id // 'none', $l // 'none');
}

sub status_of
{
	my $run = shift;
	return qq{SELECT status FROM vectorbea.runs WHERE id = '$run'};
}

sub counters
{
	my %c;
	@c{qw(leases timeouts retries deadlines gates)} = split /\|/,
	  sql(q{SELECT leases_expired, timeouts, retries_announced, deadlines_enforced, gates_expired
			  FROM vectorbea.scheduler_status()});
	return \%c;
}

sub move_clock
{
	sql(qq{ALTER SYSTEM SET vectorbea.test_clock_offset = '$_[0]'});
	sql(q{SELECT pg_reload_conf()});
}

sub fake_saw
{
	my $s = shift;
	return scalar grep { vb_json()->encode($_->{body} // {}) =~ /\Q$s\E/ } @{ vb_fake_requests() };
}

# Every path of the scheduler once, and the API from dbo's session.
sub drive
{
	my ($p, $move1, $move2) = @_;
	my %run;

	# llm nodes, run by the scheduler at once: a planner that spawns, and a
	# refused call that fails its run.
	$run{plan} = start($p, 'h_plan');
	$run{refused} = start($p, 'h_refused');
	# Runs whose time comes when the clock moves.
	$run{deadline} = start($p, 'h_deadline', '{"deadline": "1h"}');
	$run{timeout} = start($p, 'h_timeout');
	$run{lease} = start($p, 'h_lease');
	$run{retry} = start($p, 'h_retry');
	$run{reject} = start($p, 'h_reject');
	$run{approve} = start($p, 'h_approve');
	$run{escalate} = start($p, 'h_escalate');
	$run{await} = start($p, 'h_await');
	$run{cancel} = start($p, 'h_reject');

	# dbo as a worker.
	my ($dl_id, $dl_lease) = claim('h_dl_run', '3 hours');
	claim('h_timeout', '3 hours');
	claim('h_lease', '1 hour');
	my ($r_id, $r_lease) = claim('h_retry');
	dbo(qq{SELECT vectorbea.heartbeat($r_id, '$r_lease', '10 minutes');
		   SELECT vectorbea.save_checkpoint($r_id, '$r_lease', '{"step": 1}');
		   SELECT vectorbea.fail_task($r_id, '$r_lease', '{"message": "try later", "class": "transient"}')});
	my ($w_id, $w_lease) = claim('h_await');
	my $gate = dbo(qq{SELECT vectorbea.heartbeat($w_id, '$w_lease');
		SELECT vectorbea.save_checkpoint($w_id, '$w_lease', '{"step": 2}');
		SELECT vectorbea.append_event('$run{await}', 'HOSTILE_NOTE', '{"phase": $p}', 'w');
		SELECT vectorbea.await_approval($w_id, '$w_lease', 'await', '{"why": "check"}', '1 day')});
	($gate) = $gate =~ /(\d+)\s*$/;
	dbo(qq{UPDATE vectorbea.approvals SET status = 'approved', reason = 'fine', decided_by = 'dbo'
		   WHERE id OPERATOR(pg_catalog.=) $gate});
	is(dbo(qq{SELECT vectorbea.cancel_run('$run{cancel}', 'not needed')}), 't', "phase $p: dbo cancels a run");

	settled(qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run{plan}' AND node = 'extra' AND status = 'ready'},
		'1', "phase $p: the planner's answer spawned a node");
	my ($x_id, $x_lease) = claim('h_extra');
	dbo(qq{SELECT vectorbea.complete_task($x_id, '$x_lease', '{"done": true}')});
	settled(status_of($run{refused}), 'failed', "phase $p: the refused llm call fails its run");

	# A call in flight when the scheduler dies is ended in doubt by the
	# next one, and retried.
	vb_fake_script({ match => { contains => "hostile doubt $p" }, delay_ms => 30000, text => 'lost' },
		{ match => { contains => "hostile doubt $p" }, text => 'recovered' });
	$run{doubt} = start($p, 'h_doubt');
	my $t0 = time;
	usleep(50_000) until fake_saw("hostile doubt $p") || time - $t0 > 20;
	ok(fake_saw("hostile doubt $p"), "phase $p: an llm call hangs on the provider");
	my $pid = scheduler_pid();
	kill 'KILL', $pid;
	settled(qq{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler' AND pid <> $pid},
		'1', "phase $p: after SIGKILL the cluster restarts with a new scheduler", 60);
	settled(status_of($run{doubt}), 'succeeded', "phase $p: the call in doubt is ended and retried", 60);
	is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run{doubt}' AND type = 'STEP_FAILED'
				AND (data->'error'->>'in_doubt')::boolean}), '1', "phase $p: the interrupted attempt is in doubt");
	settled(q{SELECT state FROM vectorbea.scheduler_status()}, 'idle', "phase $p: the scheduler is idle");

	# The clock moves past every deadline, timeout, lease, backoff and gate.
	my $c0 = counters();
	move_clock($move1);
	settled(status_of($run{deadline}), 'failed', "phase $p: a run past its deadline fails");
	is(sql(qq{SELECT data->>'reason' FROM vectorbea.events WHERE run_id = '$run{deadline}' AND type = 'RUN_FAILED'}),
		'deadline_exceeded', "phase $p: RUN_FAILED says deadline_exceeded");
	is(sql(qq{SELECT string_agg(node || '=' || status, ' ' ORDER BY node) FROM vectorbea.nodes WHERE run_id = '$run{deadline}'}),
		'a=cancelled b=skipped c=skipped', "phase $p: the running node is revoked, the others skipped");
	my (undef, $err) = dbo_try(qq{SELECT vectorbea.complete_task($dl_id, '$dl_lease', '{}')});
	like($err, qr/VB001|does not hold it/, "phase $p: the revoked worker's completion is refused");
	settled(status_of($run{timeout}), 'failed', "phase $p: an attempt past its timeout fails its run");
	is(sql(qq{SELECT data->>'class' FROM vectorbea.events WHERE run_id = '$run{timeout}' AND type = 'STEP_FAILED'}),
		'timeout', "phase $p: with class timeout");
	settled(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run{lease}' AND type = 'STEP_FAILED'
				AND data->>'class' = 'lease_expired'}, '1', "phase $p: an expired lease ends its attempt");
	settled(qq{SELECT status FROM vectorbea.approvals WHERE run_id = '$run{reject}'}, 'expired',
		"phase $p: a gate past its timeout is rejected");
	settled(status_of($run{reject}), 'failed', "phase $p: and its run fails");
	settled(qq{SELECT string_agg(node || '=' || status, ' ' ORDER BY node) FROM vectorbea.approvals WHERE run_id = '$run{approve}'},
		'g=approved g2=pending', "phase $p: an on_timeout approve gate passes and the scheduler opens the next gate");
	settled(qq{SELECT approver_role || ' ' || escalation_level || ' ' || status FROM vectorbea.approvals
				WHERE run_id = '$run{escalate}'}, 'oncall 1 pending', "phase $p: a gate escalates to oncall");
	settled(qq{SELECT retries_announced > $c0->{retries} FROM vectorbea.scheduler_status()}, 't',
		"phase $p: the due retry is announced");
	my $c1 = counters();
	ok($c1->{leases} > $c0->{leases} && $c1->{timeouts} > $c0->{timeouts}
		  && $c1->{deadlines} > $c0->{deadlines} && $c1->{gates} >= $c0->{gates} + 3,
		"phase $p: scheduler_status counts leases, timeouts, deadlines and gates");

	# dbo works on: the retried task, the second gate, the last node.
	($r_id, $r_lease) = claim('h_retry');
	is(dbo(qq{SELECT vectorbea.complete_task($r_id, '$r_lease', '{"tries": 2}')}), '',
		"phase $p: dbo completes the retried task");
	my $g2 = sql(qq{SELECT id FROM vectorbea.approvals WHERE run_id = '$run{approve}' AND node = 'g2'});
	is(dbo(qq{UPDATE vectorbea.approvals SET status = 'approved', reason = 'ok', decided_by = 'dbo'
			  WHERE id OPERATOR(pg_catalog.=) $g2 RETURNING status}), 'approved', "phase $p: dbo decides the gate");
	my ($f_id, $f_lease) = claim('h_fin');
	dbo(qq{SELECT vectorbea.complete_task($f_id, '$f_lease', '{}')});

	# Again: the escalated gate expires, the retry after the lost lease is due.
	$c1 = counters();
	move_clock($move2);
	settled(qq{SELECT status FROM vectorbea.approvals WHERE run_id = '$run{escalate}'}, 'expired',
		"phase $p: past its last level the gate expires");
	settled(status_of($run{escalate}), 'failed', "phase $p: and its run fails");
	settled(qq{SELECT retries_announced > $c1->{retries} FROM vectorbea.scheduler_status()}, 't',
		"phase $p: the retry after the lost lease is announced");
	my ($l_id, $l_lease) = claim('h_lease');
	dbo(qq{SELECT vectorbea.complete_task($l_id, '$l_lease', '{}')});

	my @names = sort keys %run;
	is(join(' ', map { "$_=" . sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run{$_}'}) } @names),
		'approve=succeeded await=succeeded cancel=cancelled deadline=failed doubt=succeeded escalate=failed '
		  . 'lease=succeeded plan=succeeded refused=failed reject=failed retry=succeeded timeout=failed',
		"phase $p: every run ended as it should");

	# The read side of the API, from dbo's session.
	for my $n (@names)
	{
		is(dbo(qq{SELECT * FROM vectorbea.verify_run('$run{$n}')}), '', "phase $p: dbo's verify_run of $n is empty");
	}
	like(dbo(qq{SELECT * FROM vectorbea.timeline('$run{await}')}), qr/HOSTILE_NOTE/, "phase $p: dbo reads a timeline");
	like(dbo(qq{SELECT * FROM vectorbea.replay('$run{approve}')}), qr/succeeded/, "phase $p: dbo replays a run");
	like(dbo(q{SELECT vectorbea.run_due_work(); SELECT vectorbea.clock(); SELECT state FROM vectorbea.scheduler_status();
			   SELECT vectorbea.check_provider_key('default', 'openai')}),
		qr/^\{.*\}\n\d{4}-.*\n(idle|working)\nt$/, "phase $p: run_due_work, clock, scheduler_status, check_provider_key");
}

# Drives every path in a fresh scheduler and checks that no plant was
# called: by the counter, and by the server log, which keeps what a
# rollback takes from planted_log.
sub phase
{
	my ($p, $what, $move1, $move2) = @_;
	restart_scheduler();
	reset_planted_calls();
	my $log_id = last_log_id();
	my $log_offset = -s $node->logfile;
	drive($p, $move1, $move2);
	is(planted_calls(), 0, "$what: no planted function, aggregate or operator was called")
	  or diag("planted calls (from planted_log):\n" . planted_report($log_id));
	my @logged = grep { /vectorbea planted call/ } split /\n/, slurp_file($node->logfile, $log_offset);
	is(scalar @logged, 0, "$what: the server log has no planted call")
	  or diag(join("\n", @logged[ 0 .. ($#logged < 20 ? $#logged : 20) ]));
}

# ---------------------------------------------------------------------------
# Phase 1: the default search_path ("$user", public).
phase(1, 'default search_path', '2h', '4h');

# Phase 2: dbo makes public come first for every new session of the
# database, the scheduler's included.
dbo(q{ALTER DATABASE postgres SET search_path = public, pg_catalog});
{
	local $ENV{PGOPTIONS} = '';
	is($node->safe_psql('postgres', 'SHOW search_path'), 'public, pg_catalog',
		'a new session of the database gets dbo\'s search_path');
}
phase(2, 'search_path public, pg_catalog for the database', '6h', '8h');

is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 'f', 'dbo is not a superuser');

$node->stop;
done_testing();
