# The README's main command: `bash examples/demo` runs the incident
# briefing end to end against the fake provider, forks it from the planner
# and ends with verify_run of both runs; `bash examples/demo-pr-review`
# runs the second example.  This test runs both scripts as a user would
# and checks that their output shows what the README promises, so the
# demos cannot rot.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use File::Spec;
use IPC::Run;
use Test::More;

my $tree = File::Spec->rel2abs("$FindBin::Bin/../..");

# run_demo(SCRIPT): runs it with no provider key and none of the test
# framework's PG* variables (the demo starts its own server); returns
# (exit status, output).
sub run_demo
{
	my ($script) = @_;
	local %ENV = %ENV;
	delete $ENV{$_} for grep { /^(PG|OPENAI_|ANTHROPIC_)/ } keys %ENV;
	my $out = '';
	my $h = IPC::Run::start([ 'bash', "$tree/examples/$script" ],
		'<', \undef, '>&', \$out, IPC::Run::timeout(300));
	eval { $h->finish; };
	if ($@)
	{
		$h->kill_kill;
		return (-1, $out . "\n(timed out: $@)");
	}
	return ($h->full_result(0), $out);
}

my ($rc, $out) = run_demo('demo');
is($rc, 0, 'examples/demo exits with status 0') or diag($out);

# The run: three preparation steps, a planner that spawns three
# investigations, one of them failing once and retried, an editor's gate
# approved by an UPDATE, then assemble and publish.
like($out, qr/NODES_SPAWNED plan → verify_checkout_latency, confirm_payment_auth_drop, review_support_spike, assemble/,
	'the planner spawns the three investigations');
like($out, qr/STEP_FAILED confirm_payment_auth_drop attempt 1 → transient/,
	'one investigation fails once, transiently');
like($out, qr/UPDATE vectorbea\.approvals/, 'the demo approves the gate with an UPDATE');
like($out, qr/APPROVAL_GRANTED editor by=dana/, 'the editor approves the gate');
like($out, qr/NODES_SPAWNED assemble → write_brief, publish/, 'assemble spawns the writer and publish');

# The fork from the planner with a new prompt.
like($out, qr/^reused \(no worker, no model call\): prepare_outline, collect_escalations, pull_checkout_metrics$/m,
	'the fork reuses the three preparation steps');
like($out, qr/^left out \(the new plan did not ask for them\): review_support_spike$/m,
	'the fork leaves out the investigation the new plan does not ask for');
like($out, qr/^requests the fake provider received for the fork: 2$/m,
	'the fake provider receives exactly the fork\'s two calls');
like($out, qr/diff_runs\(run, fork\)/, 'the demo shows the diff of the two runs');
like($out, qr/^\s*review_support_spike\s+\|\s*only in a/m, 'the diff names the node only the first run has');

# verify_run of both, the pictures, and nothing left running.
like($out, qr/verify_run\(run\): consistent/, 'verify_run of the run is empty');
like($out, qr/verify_run\(fork\): consistent/, 'verify_run of the fork is empty');
for my $picture (qw(incident-briefing.dot incident-briefing.mmd incident-briefing-timeline.mmd
	fork.dot fork.mmd fork-timeline.mmd))
{
	ok(-s "$tree/demo-output/$picture", "the demo wrote $picture");
}
like($out, qr/^demo done: run \S+ and its fork \S+ succeeded/m, 'the demo says both runs succeeded');
my ($datadir) = $out =~ m{data in (/tmp/vbdemo\.\w+)/data};
ok(defined $datadir && !-e $datadir, 'the demo stopped and removed its server');

my ($rc2, $out2) = run_demo('demo-pr-review');
is($rc2, 0, 'examples/demo-pr-review exits with status 0') or diag($out2);
like($out2, qr/verify_run: consistent/, 'the PR-review run verifies');
like($out2, qr/^demo done: run \S+ succeeded/m, 'the PR-review run succeeded');

done_testing();
