# Outbound safety (issue 16): an SSRF suite against
# vectorbea.llm_allowed_hosts.  The test opens its own listeners: a
# forbidden pair on one port (0.0.0.0 and [::], so that a connection to
# any local address at that port is counted: 127.0.0.1, 127.0.0.2,
# 0.0.0.0, ::ffff:127.0.0.1, ::1, ::, the machine's own addresses), and
# an allowed one on 127.0.0.1 at another port that answers like OpenAI.
# The server starts with http_proxy and friends pointing at the forbidden
# port.  Then llm nodes are sent at
#   - URL literals: loopback aliases (127.0.0.2, 127.1, 0x7f000001,
#     2130706433, 0177.0.0.1), 0.0.0.0, [::1], [::], IPv4-mapped IPv6,
#     link-local and metadata addresses, the machine's own addresses;
#   - names the allow-list lists that resolve to such addresses: the
#     loopback names of /etc/hosts through the system resolver, and names
#     pinned by vectorbea.test_resolve (0.0.0.0, 127.0.0.2, ::1, ::,
#     ::ffff:127.0.0.1, IPv4-compatible, NAT64, 6to4, IPv4-translated,
#     fe80::, 169.254.169.254, fd00:ec2::254), some of them at the allowed
#     port, where a connection would reach the allowed listener;
#   - redirects (301, 302, 303, 307, 308) from an allowed provider to a
#     forbidden address, to file: and gopher:, and to the allowed
#     listener;
#   - file:, gopher:, dict:, ftp: and ldap: base URLs, refused by
#     set_provider_key, and the same stored behind its back (as 0.1.0
#     stored them unchecked).
# Each refused call fails its node with class permanent and the message
# of the check that refused it (before anything is sent, or at connect
# time), and the forbidden listeners accept 0 connections.  Positive
# controls: the test's own connections to every forbidden address are
# counted, a pinned name at the allowed port reaches the allowed listener,
# and so does the allowed address itself, once per call.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IO::Select;
use IO::Socket::IP;
use POSIX ();
use Socket qw(AF_INET AF_INET6);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $json = vb_json();

# ---------------------------------------------------------------------------
# The listeners, in a child process that logs every accepted connection as
# "label local-address peer-address".
my $v4 = IO::Socket::IP->new(LocalHost => '0.0.0.0', LocalPort => 0, Listen => 64,
	ReuseAddr => 1, Family => AF_INET) or die "listen 0.0.0.0: $@";
my $pf = $v4->sockport;    # the forbidden port
my $v6 = IO::Socket::IP->new(LocalHost => '::', LocalPort => $pf, Listen => 64,
	ReuseAddr => 1, Family => AF_INET6, V6Only => 1);
diag("no IPv6 listener ($@): IPv6 destinations are checked for refusals only") unless $v6;
my $allowed = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 64,
	ReuseAddr => 1, Family => AF_INET) or die "listen 127.0.0.1: $@";
my $pa = $allowed->sockport;    # the allowed port
my $conn_log = PostgreSQL::Test::Utils::tempdir() . '/connections.log';

my $answer = $json->encode({ id => 'chatcmpl-ssrf', object => 'chat.completion', created => 1,
		model => 'gpt-4o-mini',
		choices => [ { index => 0, message => { role => 'assistant', content => 'reached' },
				finish_reason => 'stop' } ],
		usage => { prompt_tokens => 3, completion_tokens => 1, total_tokens => 4 } });

# Reads one HTTP request (headers and a Content-Length body) within 5 s.
sub read_request
{
	my ($c) = @_;
	my $sel = IO::Select->new($c);
	my $buf = '';
	my $deadline = time + 5;
	while (time < $deadline && $sel->can_read(0.2))
	{
		my $n = sysread($c, $buf, 65536, length $buf);
		last unless $n;
		if ($buf =~ /\r\n\r\n/)
		{
			my ($len) = $buf =~ /^content-length:\s*(\d+)/mi;
			last if length($buf) - index($buf, "\r\n\r\n") - 4 >= ($len // 0);
		}
	}
	return $buf;
}

my $listener_pid = fork();
die "fork: $!" unless defined $listener_pid;
if ($listener_pid == 0)
{
	my %label = (fileno($v4) => 'forbidden', fileno($allowed) => 'allowed');
	$label{ fileno($v6) } = 'forbidden' if $v6;
	my $sel = IO::Select->new(grep { defined } $v4, $v6, $allowed);
	open(my $log, '>>', $conn_log) or die "cannot write $conn_log: $!";
	$log->autoflush(1);
	# _exit: the test's END blocks are the parent's business.
	$SIG{TERM} = sub { POSIX::_exit(0) };
	eval {
	while (1)
	{
		for my $s ($sel->can_read)
		{
			my $c = $s->accept or next;
			my $what = $label{ fileno $s };
			print $log "$what " . $c->sockhost . ' ' . $c->peerhost . "\n";
			if ($what eq 'allowed')
			{
				read_request($c);
				syswrite($c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
					  . 'Content-Length: ' . length($answer) . "\r\nConnection: close\r\n\r\n$answer");
			}
			close $c;
		}
	}
	};
	print STDERR "listener: $@";
	POSIX::_exit(1);
}
close $_ for grep { defined } $v4, $v6, $allowed;
END { if ($listener_pid) { kill 'TERM', $listener_pid; waitpid($listener_pid, 0); } }

# Accepted connections so far: (forbidden, allowed, the forbidden lines).
sub connections
{
	my @lines = -e $conn_log ? split /\n/, slurp_file($conn_log) : ();
	my @forbidden = grep { /^forbidden / } @lines;
	return (scalar @forbidden, scalar(grep { /^allowed / } @lines), \@forbidden);
}

# Waits until the counts are ($f, $a) (or 3 s pass); returns them.
sub settle_connections
{
	my ($f, $a) = @_;
	my $t0 = time;
	my @got;
	while (1)
	{
		@got = connections();
		last if ($got[0] == $f && $got[1] == $a) || time - $t0 > 3;
		usleep(20_000);
	}
	return @got;
}

# ---------------------------------------------------------------------------
# Positive control of the counter: the test's own connections to every
# forbidden destination are counted.
my @own = ('127.0.0.1', '127.0.0.2', '0.0.0.0');
push @own, '::ffff:127.0.0.1', '::1', '::' if $v6;
for my $addr (@own)
{
	my $c = IO::Socket::IP->new(PeerHost => $addr, PeerPort => $pf, Timeout => 5);
	ok($c, "control: the test connects to $addr port $pf") or diag($@);
	close $c if $c;
}
my ($f0, $a0, $lines) = settle_connections(scalar @own, 0);
is($f0, scalar @own, 'control: each of those connections is counted by the forbidden listeners')
  or diag(join "\n", @$lines);
is($a0, 0, 'control: the allowed listener has seen nothing yet');

# ---------------------------------------------------------------------------
# The server, started with every proxy variable pointing at the forbidden
# port (the test's own HTTP client was made before, without them).
my @proxy_vars = qw(http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy);
$ENV{$_} = "http://127.0.0.1:$pf" for @proxy_vars;
my ($node, $base, $fake_port) = vb_llm_server('ssrf');
delete $ENV{$_} for @proxy_vars;
# The scheduler is forked from the postmaster and inherits its environment
# (its own /proc/PID/environ is overwritten by its process title).
my ($postmaster) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
like(slurp_file("/proc/$postmaster/environ"), qr/http_proxy=http:\/\/127\.0\.0\.1:$pf\0/,
	'the server runs with http_proxy pointing at the forbidden port');

sub sql { return $node->safe_psql('postgres', shift); }

# Names that /etc/hosts maps to a loopback or unspecified address: the
# system resolver's own way to an internal address.
my %hosts_names;
if (open(my $fh, '<', '/etc/hosts'))
{
	while (<$fh>)
	{
		s/#.*//;
		my ($addr, @names) = split;
		next unless defined $addr && ($addr =~ /^127\./ || $addr eq '::1' || $addr eq '0.0.0.0');
		$hosts_names{ lc $_ } = $addr for grep { /^[A-Za-z0-9.-]+$/ && length($_) <= 63 } @names;
	}
	close $fh;
}
ok(exists $hosts_names{localhost}, '/etc/hosts maps localhost to a loopback address');

# This machine's own non-loopback addresses: a connection to one of them
# at the forbidden port would be counted too.
my @own_addrs;
for (split /\n/, `ip -o addr show 2>/dev/null`)
{
	next unless /\sinet6?\s+([0-9a-f.:]+)\//i;
	my $addr = $1;
	next if $addr =~ /^127\./ || $addr eq '::1' || $addr =~ /^fe80:/i;
	push @own_addrs, $addr;
}
diag('this machine\'s own addresses: ' . (join(', ', @own_addrs) || 'none found'));

# The check at connect time, asked directly: the ranges the IANA registry
# marks as not globally reachable, IPv6 forms that carry an internal IPv4
# address, and this machine's own addresses are not public; public
# addresses are.
for my $case ([ '192.0.2.1', 'f' ], [ '198.51.100.7', 'f' ], [ '203.0.113.9', 'f' ],
	[ '192.88.99.1', 'f' ], [ '255.255.255.255', 'f' ], [ '::ffff:0:7f00:1', 'f' ], [ '::ffff:0:a9fe:a9fe', 'f' ],
	[ 'fec0::1', 'f' ], [ '2001:db8::1', 'f' ], [ '3fff::1', 'f' ], [ '100::1', 'f' ],
	[ '8.8.8.8', 't' ], [ '::ffff:8.8.8.8', 't' ], [ '2606:4700:4700::1111', 't' ],
	(map { [ $_, 'f' ] } @own_addrs))
{
	my ($addr, $want) = @$case;
	is(sql(qq{SELECT vectorbea.llm_address_allowed('$addr', 443, 'https')}), $want,
		"llm_address_allowed: $addr is " . ($want eq 't' ? 'public' : 'not public'));
}

# Names pinned by vectorbea.test_resolve: [name, port, address].
my @pinned = (
	[ 'good.test', $pa, '127.0.0.1' ],
	[ 'zero-allowed-port.test', $pa, '0.0.0.0' ],
	[ 'mapped-allowed-port.test', $pa, '[::ffff:127.0.0.1]' ],
	[ 'zero.test', $pf, '0.0.0.0' ],
	[ 'alias.test', $pf, '127.0.0.2' ],
	[ 'loopback.test', $pf, '127.0.0.1' ],
	[ 'v6-loopback.test', $pf, '[::1]' ],
	[ 'v6-any.test', $pf, '[::]' ],
	[ 'mapped.test', $pf, '[::ffff:127.0.0.1]' ],
	[ 'mapped-hex.test', $pf, '[::ffff:7f00:2]' ],
	[ 'compat.test', $pf, '[::127.0.0.1]' ],
	[ 'nat64.test', $pf, '[64:ff9b::7f00:1]' ],
	[ 'sixtofour.test', $pf, '[2002:7f00:1::1]' ],
	[ 'translated.test', $pf, '[::ffff:0:7f00:1]' ],
	[ 'site-local.test', $pf, '[fec0::1]' ],
	[ 'link-local.test', $pf, '[fe80::1]' ],
	[ 'metadata.test', 80, '169.254.169.254' ],
	[ 'metadata6.test', 80, '[fd00:ec2::254]' ],
	[ 'metadata-mapped.test', 80, '[::ffff:169.254.169.254]' ]);
my $i = 0;
push @pinned, map { [ 'own' . $i++ . '.test', $pf, /:/ ? "[$_]" : $_ ] } @own_addrs;

my $allow = join(', ', "127.0.0.1:$pa", "127.0.0.1:$fake_port",
	(map { "$_:$pf" } sort keys %hosts_names),
	(map { $_->[1] == 80 ? $_->[0] : "$_->[0]:$_->[1]" } @pinned));
my $resolve = join(', ', map { join ':', @$_ } @pinned);
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = '$allow'\nvectorbea.test_resolve = '$resolve'\n");
$node->reload;
ok(defined vb_wait_for($node, q{SHOW vectorbea.test_resolve}, $resolve), 'the allow-list and the pinned names are loaded');

sql(q{SELECT vectorbea.define_workflow('ask', '{"nodes": [
  {"id": "ask", "kind": "llm", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "hello", "max_tokens": 5}}]}')});

my $workspaces = 0;

# Runs one llm node against base_url; returns (status, class, message,
# LLM_REQUESTED events).  $stored: write base_url into provider_keys
# directly, as 0.1.0 did without checking it.
sub call_once
{
	my ($url, $stored) = @_;
	my $ws = 'ws' . ++$workspaces;
	if ($stored)
	{
		vb_store_key($node, $ws, 'openai', 'sk-ssrf-test-key', undef);
		sql(qq{UPDATE vectorbea.provider_keys SET base_url = '$url' WHERE workspace = '$ws'});
	}
	else
	{
		vb_store_key($node, $ws, 'openai', 'sk-ssrf-test-key', $url);
	}
	my $run = sql(qq{SELECT vectorbea.start_run('ask', options => '{"workspace": "$ws"}')});
	vb_wait_for($node, qq{SELECT status <> 'running' FROM vectorbea.runs WHERE id = '$run'}, 't');
	my $status = sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'});
	my $failed = sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'});
	my $f = $failed ? $json->decode($failed) : { error => {} };
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', "$url: verify_run is empty");
	return ($status, $f->{class} // '', $f->{error}{message} // '',
		sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}));
}

my ($forbidden_seen, $allowed_seen) = ($f0, $a0);

# A call that must be refused: the node fails permanently with a message
# that matches $want; $sent says whether the refusal comes at connect time
# (after LLM_REQUESTED) or before; no listener accepts anything.
sub refused
{
	my ($url, $want, $sent, $what, $stored) = @_;
	my ($status, $class, $message, $requested) = call_once($url, $stored);
	is("$status $class", 'failed permanent', "$what ($url): the node fails permanently");
	like($message, $want, "$what: the error says why") or diag("message: $message");
	is($requested, $sent ? 1 : 0, $sent ? "$what: refused at connect time, after LLM_REQUESTED"
		: "$what: refused before anything was sent");
	my ($f, $a, $lines) = settle_connections($forbidden_seen, $allowed_seen);
	is("$f $a", "$forbidden_seen $allowed_seen", "$what: no listener accepted a connection")
	  or diag(join "\n", @$lines);
	($forbidden_seen, $allowed_seen) = ($f, $a);
}

sub reached
{
	my ($url, $what) = @_;
	my ($status, $class, $message) = call_once($url);
	is($status, 'succeeded', "$what ($url): the call succeeds") or diag("$class: $message");
	my ($f, $a) = settle_connections($forbidden_seen, $allowed_seen + 1);
	is("$f $a", "$forbidden_seen " . ($allowed_seen + 1), "$what: the allowed listener accepted one connection, the forbidden ones none");
	($forbidden_seen, $allowed_seen) = ($f, $a);
}

my $not_listed = qr/^the host "[^"]+" is not in vectorbea\.llm_allowed_hosts$/;
my $wrong_port = qr/^port \d+ of host "[^"]+" is not allowed by vectorbea\.llm_allowed_hosts \(an entry without a port allows port 80 only\)$/;
my $before = qr/$not_listed|$wrong_port/;
my $at_connect = qr/^the connection to [0-9a-f.:]+ was refused: the address is not allowed by vectorbea\.llm_allowed_hosts$/;

# ---------------------------------------------------------------------------
# The allowed address itself, and a pinned name at the allowed port: both
# reach the allowed listener, once per call.  These prove that the
# counters count and that vectorbea.test_resolve is in force.
reached("http://127.0.0.1:$pa/v1", 'the allowed address');
reached("http://good.test:$pa/v1", 'a pinned name that resolves to the allowed address');

# ---------------------------------------------------------------------------
# URL literals: refused before anything is sent.
refused("http://127.0.0.1:$pf/v1", $wrong_port, 0, 'loopback at a port the entry does not allow');
refused("http://$_:$pf/v1", $before, 0, "loopback alias $_")
  for qw(127.0.0.2 127.1 0x7f000001 2130706433 0177.0.0.1 0x7f.1 127.000.000.001);
refused("http://127.0.0.2:$pa/v1", $not_listed, 0, 'a loopback alias at the allowed port');
refused("http://0.0.0.0:$pf/v1", $not_listed, 0, '0.0.0.0');
refused("http://0.0.0.0:$pa/v1", $not_listed, 0, '0.0.0.0 at the allowed port (it would reach 127.0.0.1)');
refused("http://0:$pa/v1", $before, 0, '0 at the allowed port');
refused("http://[::1]:$pf/v1", $not_listed, 0, 'IPv6 loopback');
refused("http://[::]:$pf/v1", $not_listed, 0, 'IPv6 unspecified');
refused("http://[::ffff:127.0.0.1]:$pa/v1", $not_listed, 0, 'IPv4-mapped loopback at the allowed port');
refused("http://[::ffff:7f00:1]:$pf/v1", $not_listed, 0, 'IPv4-mapped loopback in hex');
refused('http://169.254.169.254/latest/meta-data/', $not_listed, 0, 'the cloud metadata address');
refused('http://[fd00:ec2::254]/latest/meta-data/', $not_listed, 0, 'the IPv6 cloud metadata address');
refused("http://[fe80::1%25lo]:$pf/v1", $not_listed, 0, 'a link-local address with a zone');
refused("http://$_:$pf/v1", $not_listed, 0, "this machine's address $_")
  for map { /:/ ? "[$_]" : $_ } @own_addrs;
# Credentials that would move the host elsewhere, stored behind
# set_provider_key's back (it refuses a user name in base_url).
refused("http://127.0.0.1:$pa\@127.0.0.2:$pf/v1", $before, 0, 'an allowed host written as a user name', 1);
refused("http://good.test:$pa\@127.0.0.1:$pf/v1", $before, 0, 'an allowed name written as a user name', 1);

# ---------------------------------------------------------------------------
# Names the allow-list lists, which resolve to forbidden addresses:
# refused at connect time, whatever the name resolves to.
refused("http://$_:$pf/v1", $at_connect, 1, "/etc/hosts name $_ ($hosts_names{$_})")
  for sort keys %hosts_names;
refused("http://LocalHost:$pf/v1", $at_connect, 1, 'localhost in capitals');
for my $p (@pinned[1 .. $#pinned])
{
	my ($name, $port, $addr) = @$p;
	my $url = $port == 80 ? "http://$name/v1" : "http://$name:$port/v1";
	my $where = $port == $pa ? ' at the allowed port' : '';
	refused($url, $at_connect, 1, "a name pinned to $addr$where");
}

# ---------------------------------------------------------------------------
# Redirects from an allowed provider are not followed, wherever they point,
# the allowed listener included.
for my $case ([ 301, "http://127.0.0.1:$pf/v1/chat/completions" ],
	[ 302, "http://127.0.0.2:$pf/v1/chat/completions" ],
	[ 303, "http://[::1]:$pf/v1/chat/completions" ],
	[ 307, 'http://169.254.169.254/latest/meta-data/' ],
	[ 308, "http://localhost:$pf/v1/chat/completions" ],
	[ 302, 'file:///etc/passwd' ],
	[ 302, "gopher://127.0.0.1:$pf/_GET%20/" ],
	[ 307, "http://127.0.0.1:$pa/v1/chat/completions" ])
{
	my ($code, $location) = @$case;
	vb_fake_reset();
	vb_fake_script({ mode => 'redirect', status => $code, location => $location });
	refused($base, qr/^the provider answered $code: /, 1, "a $code redirect to $location");
	is(scalar @{ vb_fake_requests() }, 1, "a $code redirect to $location: the provider was called once");
}

# ---------------------------------------------------------------------------
# Other schemes: set_provider_key refuses them; stored behind its back
# they are refused before anything is sent.
for my $url ('file:///etc/passwd', "gopher://127.0.0.1:$pf/_GET%20/", "dict://127.0.0.1:$pf/info",
	"ftp://127.0.0.1:$pf/", "ldap://127.0.0.1:$pf/", "telnet://127.0.0.1:$pf/")
{
	my ($rc, $out, $err) = $node->psql('postgres',
		qq{SELECT vectorbea.set_provider_key('schemes', 'openai', 'sk-ssrf-test-key', '$url')});
	like($err, qr/ERROR:  base_url must start with http:\/\/ or https:\/\//, "set_provider_key refuses $url");
	my ($scheme) = $url =~ /^(\w+):/;
	refused($url, qr/^(the URL scheme "$scheme" is not allowed; use http or https|"\Q$url\E\/chat\/completions" is not a valid URL)$/,
		0, "a stored $scheme: URL", 1);
}
is(sql(q{SELECT count(*) FROM vectorbea.provider_keys WHERE workspace = 'schemes'}), '0',
	'nothing was stored by the refused set_provider_key calls');
# A stored URL that is not one is quoted cut, as long text is everywhere:
# its path may hold a token, and the message lands in the node's error,
# which more roles read than provider_keys.
refused("http://127.0.0.1:$pa/v1/token=SECRET-abcdefghijklmnopqrstuvwxyz-0123456789 x",
	qr/^"http:\/\/127\.0\.0\.1:\d{2}\S*… \(\d+ characters\)" is not a valid URL$/, 0, 'a stored URL with a space', 1);

# ---------------------------------------------------------------------------
# The allowed address still works at the end, and the totals.
reached("http://127.0.0.1:$pa/v1", 'the allowed address, at the end');
my ($f, $a, $flines) = settle_connections($f0, $allowed_seen);
is($f - $f0, 0, 'no connection reached a forbidden listener in the whole test') or diag(join "\n", @$flines);
is($a, 3, 'the allowed listener saw exactly the three allowed calls');
unlike(slurp_file($node->logfile), qr/PANIC|terminated by signal/, 'the server log shows no crash');

done_testing();
