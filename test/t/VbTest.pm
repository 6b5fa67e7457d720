# VbTest -- helpers shared by vectorbea's TAP tests: a server with the
# scheduler, polling for a state, and the fake LLM provider
# (test/fake_provider.py) with its control endpoints.
package VbTest;

use strict;
use warnings;
use Exporter 'import';
use File::Spec;
use FindBin;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(vb_server vb_llm_server vb_wait_for vb_scheduler_pass vb_reload
  vb_master_key vb_store_key vb_fake_start vb_fake_script vb_fake_requests vb_fake_stats vb_fake_reset
  vb_json vb_kill_server vb_alive vb_plans_in vb_seq_scans vb_filtered_node_scans vb_drain_sql
  vb_worker_grants_sql vb_notifications);

my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 30);
my ($fake_pid, $fake_port);

sub vb_json { return $json; }

# The notifications in psql's output (of a background_psql that LISTENs,
# after any query), in order, as [channel, payload, sending pid].
sub vb_notifications
{
	my ($out) = @_;
	my @got;
	while ($out =~ /Asynchronous notification "([^"]+)" with payload "(.*?)" received from server process with PID (\d+)/g)
	{
		push @got, [ $1, $2, $3 ];
	}
	return @got;
}

# A started server with vectorbea preloaded and its scheduler on database
# postgres; $conf is added to postgresql.conf.
sub vb_server
{
	my ($name, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', PostgreSQL::Test::Utils::slurp_file($ENV{VB_TEST_CONF}))
	  if $ENV{VB_TEST_CONF};
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'vectorbea'
vectorbea.database = 'postgres'
vectorbea.scheduler_idle_timeout = '1h'
} . ($conf // ''));
	$node->start;
	return $node;
}

# A server ready for llm nodes: vb_server (with $conf), the fake provider
# started, calls allowed to its port on 127.0.0.1 and nowhere else there,
# the scheduler running (a test), the extension created (at $version if
# given, else the control file's default) and a master key in place.
# Returns the server, the fake provider's base URL for set_provider_key,
# and its port.
sub vb_llm_server
{
	my ($name, $conf, $version) = @_;
	my $node = vb_server($name, $conf);
	my $port = vb_fake_start($node->basedir);
	$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = '127.0.0.1:$port'\n");
	$node->reload;
	Test::More::ok(defined vb_wait_for($node,
			q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
		'the scheduler is running');
	$node->safe_psql('postgres',
		'CREATE EXTENSION vectorbea' . (defined $version ? " VERSION '$version'" : '') . ' CASCADE');
	vb_master_key($node);
	return ($node, "http://127.0.0.1:$port/v1", $port);
}

# Polls $query until it returns $want; returns the seconds it took, or
# undef after $timeout seconds (default 30).
sub vb_wait_for
{
	my ($node, $query, $want, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < ($timeout // 30))
	{
		# The server may be restarting: a failed connection is just a miss.
		my ($rc, $got) = $node->psql('postgres', $query);
		return time - $t0 if $rc == 0 && $got eq $want;
		usleep(20_000);
	}
	return undef;
}

# Makes the scheduler of database $db (default postgres) run a pass that
# begins after this call, and waits until that pass has ended: a marker
# that the scheduler has had its chance at everything committed before the
# call, for checks that something did NOT happen.  The pass count is taken
# while the scheduler is between passes (so the next pass counted begins
# after this point); a reload (pg_reload_conf) wakes it.  True when the
# pass ended within $timeout seconds (default 60).
sub vb_scheduler_pass
{
	my ($node, $db, $timeout) = @_;
	$db //= 'postgres';
	my $until = time + ($timeout // 60);
	my $status = q{SELECT state || ' ' || wakes FROM vectorbea.scheduler_status()
		WHERE database = current_database()};
	my $wakes;
	while (time < $until)
	{
		my ($rc, $out) = $node->psql($db, $status);
		if ($rc == 0 && $out =~ /^idle (\d+)$/)
		{
			$wakes = $1;
			last;
		}
		usleep(20_000);
	}
	return 0 unless defined $wakes;
	$node->safe_psql($db, 'SELECT pg_reload_conf()');
	while (time < $until)
	{
		my ($rc, $out) = $node->psql($db, $status);
		return 1 if $rc == 0 && $out =~ /^idle (\d+)$/ && $1 > $wakes;
		usleep(20_000);
	}
	Test::More::diag("no scheduler pass ended in $db; scheduler_status: "
		  . ($node->psql($db, 'SELECT s::text FROM vectorbea.scheduler_status() s'))[1]);
	return 0;
}

# Reloads the configuration (what ALTER SYSTEM or append_conf changed) and
# waits until it is in force: a new session's SHOW gives each value of
# %$want (setting => value), and the scheduler of $db has made a pass since
# the reload woke it, so it runs with the new values too.  True when both
# happened within $timeout seconds (default 60).
sub vb_reload
{
	my ($node, $want, $db, $timeout) = @_;
	$db //= 'postgres';
	# The postmaster reads the file when signalled, and signals its children
	# (the scheduler among them); sessions started after that have the new
	# values.
	$node->safe_psql($db, 'SELECT pg_reload_conf()');
	for my $setting (sort keys %{ $want // {} })
	{
		next if defined vb_wait_for($node, "SHOW $setting", $want->{$setting}, $timeout // 60);
		Test::More::diag("SHOW $setting did not become '$want->{$setting}'");
		return 0;
	}
	# A pass that begins from here on begins after the scheduler read the file.
	return vb_scheduler_pass($node, $db, $timeout);
}

# Writes a master key file (mode 0600) into the data directory and points
# vectorbea.master_key_file at it.
sub vb_master_key
{
	my ($node, $key) = @_;
	my $path = $node->data_dir . '/vb_master_key';
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	chmod(0600, $path);
	print $fh ($key // 'tap-test-master-key-0123456789'), "\n";
	close $fh;
	$node->append_conf('postgresql.conf', "vectorbea.master_key_file = 'vb_master_key'\n");
	$node->reload;
	# A session started before the postmaster has read the file would not
	# have the key: wait until a new one does.
	die "vectorbea.master_key_file did not take effect"
	  unless defined vb_wait_for($node, 'SHOW vectorbea.master_key_file', 'vb_master_key', 60);
	return $path;
}

# Stores a provider key without the key reaching the server log: statement
# logging is off for the one transaction that carries it.
sub vb_store_key
{
	my ($node, $workspace, $provider, $key, $base_url) = @_;
	my $url = defined $base_url ? "'$base_url'" : 'NULL';
	$node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL log_statement = 'none';
SET LOCAL log_min_duration_statement = -1;
SET LOCAL log_min_error_statement = 'panic';
SELECT vectorbea.set_provider_key('$workspace', '$provider', '$key', $url);
COMMIT;});
	return;
}

# Starts the fake provider on 127.0.0.1; returns its port.
sub vb_fake_start
{
	my ($dir) = @_;
	my $port_file = "$dir/fake_provider.port";
	my $log = "$dir/fake_provider.log";
	unlink $port_file;
	my $script = File::Spec->catfile($FindBin::Bin, '..', 'fake_provider.py');
	$fake_pid = fork();
	die "fork: $!" unless defined $fake_pid;
	if ($fake_pid == 0)
	{
		open(STDERR, '>>', $log) or die "cannot write $log: $!";
		open(STDOUT, '>>', $log);
		exec('python3', $script, '--port', '0', '--port-file', $port_file)
		  or die "exec python3: $!";
	}
	my $t0 = time;
	until (-s $port_file)
	{
		die "the fake provider did not start (see $log)" if time - $t0 > 20;
		usleep(20_000);
	}
	$fake_port = PostgreSQL::Test::Utils::slurp_file($port_file);
	chomp $fake_port;
	return $fake_port;
}

END
{
	if ($fake_pid)
	{
		kill 'TERM', $fake_pid;
		waitpid($fake_pid, 0);
	}
}

sub fake_call
{
	my ($method, $path, $body) = @_;
	my $res = $http->request($method, "http://127.0.0.1:$fake_port/_fake/$path",
		defined $body
		? { content => $json->encode($body), headers => { 'content-type' => 'application/json' } }
		: {});
	die "fake provider $method $path: $res->{status} $res->{content}" unless $res->{success};
	return $json->decode($res->{content});
}

sub vb_fake_script { return fake_call('POST', 'script', { rules => [@_] }); }
sub vb_fake_reset { return fake_call('POST', 'reset', {}); }
sub vb_fake_requests { return fake_call('GET', 'requests')->{requests}; }
sub vb_fake_stats { return fake_call('GET', 'stats'); }

# ---------------------------------------------------------------------------
# SIGKILL every process of the server at once, like a power cut that spares
# the page cache.  The postmaster is stopped first so that it neither forks
# nor reacts to its children dying; then its children and itself are
# killed.  Children are found through /proc (each calls setsid(), so there
# is no process group to signal).
# ---------------------------------------------------------------------------
sub vb_kill_server
{
	my ($node) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	my ($pm) = split /\n/, PostgreSQL::Test::Utils::slurp_file($pidfile);
	die "no postmaster pid in $pidfile" unless $pm && $pm =~ /^\d+$/;

	kill 'STOP', $pm or die "cannot stop postmaster $pm: $!";
	my @children = vb_children_of($pm);
	kill 'KILL', @children if @children;
	$node->kill9;    # SIGKILL to the postmaster; forgets its pid
	Test::More::note('killed postmaster ' . $pm . ' and ' . scalar(@children) . ' children');

	# Wait until they are all gone.  A zombie postmaster counts as alive: a
	# new postmaster refuses to start while the pid in postmaster.pid
	# answers kill 0, and how fast orphans are reaped depends on pid 1.
	my $until = time + 30;
	while (time < $until)
	{
		last unless grep { -e "/proc/$_" } ($pm, @children);
		usleep(20_000);
	}
	my @running = grep { vb_alive($_) } ($pm, @children);
	die "server processes still running after SIGKILL: @running" if @running;
	return;
}

sub vb_children_of
{
	my ($parent) = @_;
	my @kids;
	opendir(my $dh, '/proc') or die "cannot read /proc: $!";
	for my $pid (grep { /^\d+$/ } readdir $dh)
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my $stat = <$fh>;
		close $fh;
		next unless defined $stat;
		# pid (comm) state ppid ...; comm may contain spaces and parentheses
		my ($state, $ppid) = split ' ', substr($stat, rindex($stat, ')') + 2);
		push @kids, $pid if defined $ppid && $ppid == $parent;
	}
	closedir $dh;
	return @kids;
}

# SQL that drains every ready task of $activity through the engine, as
# workers would: claims of 1,000 and complete_tasks, until none is left.
sub vb_drain_sql
{
	my ($activity) = @_;
	return qq{
DO \$\$
DECLARE
	ids bigint[];
	leases uuid[];
BEGIN
	LOOP
		SELECT array_agg(task_id), array_agg(lease) INTO ids, leases
		  FROM vectorbea.claim_tasks('drainer', ARRAY['$activity'], 1000);
		EXIT WHEN ids IS NULL;
		PERFORM vectorbea.complete_tasks(ids, leases);
	END LOOP;
END \$\$;
};
}

# What docs/operations.md grants a worker role: the schema, and the
# functions a worker calls.
sub vb_worker_grants_sql
{
	my ($role) = @_;
	return qq{
GRANT USAGE ON SCHEMA vectorbea TO $role;
GRANT EXECUTE ON FUNCTION
	vectorbea.claim_tasks(text, text[], integer, interval),
	vectorbea.heartbeat(bigint, uuid, interval),
	vectorbea.save_checkpoint(bigint, uuid, jsonb),
	vectorbea.complete_task(bigint, uuid, jsonb, jsonb, jsonb),
	vectorbea.complete_tasks(bigint[], uuid[], jsonb[], jsonb[], jsonb[]),
	vectorbea.fail_task(bigint, uuid, jsonb, boolean),
	vectorbea.await_approval(bigint, uuid, text, jsonb, interval),
	vectorbea.append_event(uuid, text, jsonb, text)
  TO $role;
};
}

# The plans auto_explain wrote into $log (a slice of the server log): each
# is one entry, "duration: ... plan:", then "Query Text: ..." and the
# plan's lines, each indented.
sub vb_plans_in
{
	my ($log) = @_;
	return grep { /plan:\n\s+Query Text:/ } split /\n(?=\S)/, $log;
}

# The plans that scan one of $tables (an alternation: "runs|nodes")
# sequentially.
sub vb_seq_scans
{
	my ($tables, @plans) = @_;
	return grep { /Seq Scan on (?:$tables)\b/ } @plans;
}

# The scans of nodes, in auto_explain's plans, that read rows the queue
# index made for them would have skipped: through an index other than the
# ready nodes' keeping the ready ones by a filter, or through the whole
# range of a run in the unique index on (run_id, node) keeping the pending
# ones (nodes_pending_idx finds a run's pending nodes).  A run's nodes of
# other statuses (succeeded, failed, open) are read by run where a
# statement needs them all, at a run's end or cancel, and are not
# counted.  Each is returned as its plan lines.
sub vb_filtered_node_scans
{
	my (@plans) = @_;
	my $scan = qr/Index Scan using (?:(?!nodes_ready_run_idx)\S+ on nodes \S+ .*\n(?:\s+Index Cond: .*\n)?\s+Filter: .*status = 'ready'|nodes_run_id_node_key on nodes \S+ .*\n\s+Index Cond: \(run_id = [^()]*\)\n\s+Filter: .*status = 'pending').*/;
	return map { /($scan)/ ? ($1) : () } @plans;
}

sub vb_alive
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return 0;
	my $stat = <$fh>;
	close $fh;
	return 0 unless defined $stat;
	my ($state) = split ' ', substr($stat, rindex($stat, ')') + 2);
	return $state ne 'Z' && $state ne 'X';
}

1;
