# graph(run, 'dot') renders with Graphviz: a run with a spawn, a node that
# failed once and was retried, and a decided gate is drawn by `dot -Tsvg`
# without an error, and the picture holds every node with its state.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

# test/run installs Graphviz (test/lib/common.sh); elsewhere this is skipped.
my ($dot) = grep { -x $_ } map { "$_/dot" } split /:/, ($ENV{PATH} // '');
plan skip_all => 'Graphviz (dot) is not installed' unless $dot;

my $node = vb_server('graph');
sub sql { return $node->safe_psql('postgres', shift); }
sql('CREATE EXTENSION vectorbea CASCADE');
sql(q{SELECT vectorbea.define_workflow('pic', '{"nodes":[
	{"id":"scout","activity":"g_scout"},
	{"id":"plan","activity":"g_plan","depends_on":["scout"],"retry":{"max_attempts":3,"initial":"0s","max":"0s"}},
	{"id":"editor","kind":"approval","depends_on":["plan"],"approval":{"gate":"publish"}}]}')});
my $run = sql(q{SELECT vectorbea.start_run('pic')});
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['g_scout'])});
sql(q{SELECT vectorbea.fail_task(task_id, lease, '{"message": "busy \"quoted\"", "class": "transient"}')
		FROM vectorbea.claim_tasks('w', ARRAY['g_plan'])});
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}',
		spawn => '[{"id":"check:db","activity":"g_check","depends_on":["plan"]}]')
		FROM vectorbea.claim_tasks('w', ARRAY['g_plan'])});
# Graphviz reads &...; in a label as an entity: written as text, a name
# with &#10; would add a line to the picture, and &#1; a control
# character that no XML reader takes.
sql(qq{UPDATE vectorbea.approvals SET status = 'approved',
		decided_by = 'Dana "the editor" &#10;forged &#1;&lt;b&gt;' WHERE run_id = '$run'});

my $dir = PostgreSQL::Test::Utils::tempdir();
my $dotfile = "$dir/run.dot";
open(my $fh, '>', $dotfile) or die "cannot write $dotfile: $!";
print $fh sql(qq{SELECT vectorbea.graph('$run', 'dot')});
close $fh;
my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ $dot, '-Tsvg', $dotfile ], '>', \$out, '2>', \$err);
ok($ok, 'dot renders the graph') or diag($err);
is($err, '', 'dot has nothing to complain about');
like($out, qr/<svg/, 'the result is an SVG picture');
for my $label ('scout', 'plan', 'editor', 'check:db', 'attempt 2/3', 'publish: approved by Dana')
{
	like($out, qr/\Q$label\E/, "the picture shows \"$label\"");
}
is(() = $out =~ /class="edge"/g, 4, 'three dependencies and one spawn are drawn');
like($out, qr/approved by Dana &quot;the editor&quot; &amp;#10;forged &amp;#1;&amp;lt;b&amp;gt;</,
	'a name with entities is shown as it was written');
unlike($out, qr/[\x00-\x08]/, 'no control character reaches the SVG');
my $svgfile = "$dir/run.svg";
open($fh, '>', $svgfile) or die "cannot write $svgfile: $!";
print $fh $out;
close $fh;
my ($xml_out, $xml_err) = ('', '');
ok(IPC::Run::run([ 'python3', '-c', 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])', $svgfile ],
		'>', \$xml_out, '2>', \$xml_err),
	'the SVG is well-formed XML') or diag($xml_err);

my $mermaid = sql(qq{SELECT vectorbea.graph('$run')});
like($mermaid, qr/\Aflowchart TD\n/, 'mermaid: a flowchart');
like($mermaid, qr/-\. spawned \.->/, 'mermaid: the spawn is drawn dashed');
like($mermaid, qr/#quot;the editor#quot;/, 'mermaid: quotes in labels are escaped');

is(sql(q{SELECT string_agg(r.id || ': ' || v::text, E'\n') FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}),
	'', 'verify_run finds no difference for any run');

done_testing();
