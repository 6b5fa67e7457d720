# VbPlants -- look-alikes for the hostile search_path tests (011, 031): a
# role plants in schema public a function, aggregate or operator for each
# signature pg_catalog (or pgcrypto) has under a name the engine uses, in
# the forms that beat pg_catalog's when public is searched: concrete types
# for polymorphic ones, better-matching argument types, the same signature
# (for when public comes first).  Each plant records its call and, called by
# a superuser, makes a victim role a superuser; then it does what the
# genuine object does.
package VbPlants;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Utils;

our @EXPORT = qw(vb_engine_names vb_plant_prepare vb_plant_lookalikes);

# The names the engine's SQL calls, from the string literals of the given C
# files: identifier( and pg_catalog.identifier(, without SQL keywords; and
# the pgcrypto functions, which keys.c and llm.c call as %s.identifier(
# with pgcrypto's schema.  The SQL files given are scanned whole (their
# statements and function bodies).  Words of messages that are no function
# find no signature and plant nothing.  Returns (\%fn, \%crypto).
my %keyword = map { $_ => 1 } qw(all and any array as asc between by case cast coalesce conflict
  cross cube cycle default delete desc distinct do else end except exists extract filter for from
  full greatest group grouping having if ilike in inner insert intersect into is isnull join lateral
  least like limit materialized not notnull nullif of offset on only or order outer over overlay
  partition position primary references returning rollup row rows select set sets similar some
  substring table then to treat trim union unique update using values when where window with
  within);

sub vb_engine_names
{
	my ($c_files, $sql_files) = @_;
	my (%fn, %crypto);
	for my $file (@$c_files)
	{
		my $src = slurp_file($file);
		$src =~ s{/\*.*?\*/}{ }gs;
		while ($src =~ /"((?:[^"\\\n]|\\.)*)"/g)
		{
			my $lit = $1;
			while ($lit =~ /(?<![\w.\$%])(?:pg_catalog\.)?([A-Za-z_]\w*)\s*\(/g)
			{
				$fn{ lc $1 } = 1 unless $keyword{ lc $1 };
			}
			$crypto{ lc $1 } = 1 while $lit =~ /%s\.([A-Za-z_]\w*)\s*\(/g;
		}
	}
	for my $file (@{ $sql_files // [] })
	{
		my $src = slurp_file($file);
		$src =~ s{--[^\n]*}{ }g;
		$src =~ s{/\*.*?\*/}{ }gs;
		while ($src =~ /(?<![\w.\$%@])(?:pg_catalog\.)?([A-Za-z_]\w*)\s*\(/g)
		{
			$fn{ lc $1 } = 1 unless $keyword{ lc $1 };
		}
	}
	return (\%fn, \%crypto);
}

# Creates public.planted_calls (a sequence: a rollback does not undo it),
# public.planted_log, planted_objects, planted_skipped and planted_hit.
# planted_hit records a call in the server log, the sequence and
# planted_log, with who called and from which statement (the scheduler's
# steps name themselves in pg_stat_activity); in a superuser's session it
# makes $victim a superuser.  $run runs SQL as the planting role.
sub vb_plant_prepare
{
	my ($run, $victim) = @_;
	die "unexpected role name" unless $victim =~ /^[a-z_][a-z0-9_]*$/;
	(my $sql = <<'SQL') =~ s/VICTIM_ROLE/$victim/g;
SET search_path = pg_catalog;
CREATE SEQUENCE public.planted_calls;
GRANT USAGE, UPDATE ON SEQUENCE public.planted_calls TO PUBLIC;
CREATE TABLE public.planted_log (id bigserial PRIMARY KEY, what text, session_role text,
	superuser text, backend text, activity text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.planted_log TO PUBLIC;
GRANT USAGE ON SEQUENCE public.planted_log_id_seq TO PUBLIC;
CREATE TABLE public.planted_objects (kind text, name text, signature text, PRIMARY KEY (kind, signature));
CREATE TABLE public.planted_skipped (kind text, name text, signature text, problem text);
CREATE FUNCTION public.planted_hit(what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $h$
DECLARE
	su text := current_setting('is_superuser');
	act text;
	backend text;
BEGIN
	BEGIN
		SELECT a.query, a.backend_type INTO act, backend FROM pg_stat_activity a WHERE a.pid = pg_backend_pid();
	EXCEPTION WHEN OTHERS THEN
		act := NULL;
	END;
	RAISE LOG 'vectorbea planted call: % by % (superuser %) in %: %',
		what, session_user, su, backend, left(act, 200);
	PERFORM nextval('public.planted_calls');
	BEGIN
		INSERT INTO public.planted_log (what, session_role, superuser, backend, activity)
		VALUES (what, session_user, su, backend, left(act, 200));
	EXCEPTION WHEN OTHERS THEN
		NULL;
	END;
	IF su = 'on' THEN
		BEGIN
			ALTER ROLE VICTIM_ROLE SUPERUSER;
		EXCEPTION WHEN OTHERS THEN
			NULL;
		END;
	END IF;
END
$h$;
SQL
	$run->($sql);
	return;
}

# For each name, each of pg_catalog's signatures (pgcrypto's schema for the
# pgcrypto names) gives plants:
#   polymorphic ones: each concrete type for anyelement/anycompatible and
#     their array and nonarray kin ("polymorphic");
#   "any": each concrete type, every pair where two arguments are "any"
#     (VARIADIC "any": VARIADIC text[]);
#   others: the same signature ("same"), and, one argument at a time, each
#     type that casts to it implicitly, or text for varchar, name, "char"
#     ("cast"), unless the name already has that signature.
# Operators the same way, on operands of the types at hand.  Each object is
# created on its own; what cannot be created is listed in planted_skipped.
#
# Options: extra_types, a list of type names that are also tried as
# arguments that cast implicitly (the oid family, "char", ...); unknown,
# also plant op(T, T) for each pg_catalog operator (T, U) that has none,
# which an untyped literal on the other side selects.
sub vb_plant_lookalikes
{
	my ($run, $fn, $crypto, $ops, %opt) = @_;
	my $fn_list = join(',', sort keys %$fn);
	my $crypto_list = join(',', sort keys %$crypto);
	my $types = join(',', @{ $opt{extra_types} // [] });
	die "unexpected name" if "$fn_list,$crypto_list" =~ /[^a-z0-9_,]/ || $types =~ /'/;
	$run->(qq{SET planter.names = '$fn_list';
SET planter.crypto = '$crypto_list';
SET planter.ops = '@$ops';
SET planter.extra_types = '$types';
SET planter.unknown = '} . ($opt{unknown} ? 'on' : 'off') . qq{';
} . <<'SQL');
SET search_path = pg_catalog;
SET search_path = pg_catalog;
DO $gen$
DECLARE
	fn_names text[] := string_to_array(current_setting('planter.names'), ',');
	crypto_names text[] := string_to_array(current_setting('planter.crypto'), ',');
	op_names text[] := string_to_array(current_setting('planter.ops'), ' ');
	scalars oid[] := ARRAY['text', 'jsonb', 'uuid', 'bigint', 'integer', 'numeric', 'timestamptz',
		'boolean', 'name', 'varchar', 'interval', 'bytea', 'double precision', 'smallint',
		'timestamp']::regtype[]::oid[];
	core oid[] := ARRAY['text', 'jsonb', 'uuid', 'bigint', 'integer', 'numeric', 'timestamptz',
		'boolean', 'name']::regtype[]::oid[];
	casters oid[];
	stringish oid[] := ARRAY['varchar', 'name', '"char"', 'bpchar']::regtype[]::oid[];
	fam_a oid[] := ARRAY['anyelement', 'anynonarray', 'anyarray']::regtype[]::oid[];
	fam_b oid[] := ARRAY['anycompatible', 'anycompatiblenonarray', 'anycompatiblearray']::regtype[]::oid[];
	arrays oid[] := ARRAY['anyarray', 'anycompatiblearray']::regtype[]::oid[];
	anyoid oid := '"any"'::regtype;
	ok_pseudo oid[];
	crypto_schema name;
	p record;
	sa oid;
	sb oid;
	v oid[];
	vr oid;
	t oid;
	c oid;
	i int;
	k int;
	anypos int[];
	n int := 0;
	ins int[];
	sig text;
	label text;
	call text;
BEGIN
	casters := scalars || ARRAY['"char"', 'bpchar', 'real', 'date', 'json']::regtype[]::oid[]
		|| ARRAY(SELECT x::regtype::oid
				   FROM unnest(string_to_array(nullif(current_setting('planter.extra_types', true), ''), ',')) x);
	ok_pseudo := fam_a || fam_b || anyoid;
	SELECT e.extnamespace::regnamespace::name INTO crypto_schema FROM pg_extension e WHERE e.extname = 'pgcrypto';
	CREATE TEMP TABLE todo (kind text, schema name, name text, args oid[], modes text[], argnames text[],
		orig oid[], isvar boolean, ret oid, orig_ret oid, retset boolean, why text);

	-- Functions and aggregates.
	FOR p IN
		SELECT pr.pronamespace::regnamespace::name AS schema, pr.proname::text AS name,
			   CASE pr.prokind WHEN 'a' THEN 'aggregate' ELSE 'function' END AS kind,
			   coalesce(pr.proallargtypes, string_to_array(pr.proargtypes::text, ' ')::oid[]) AS types,
			   coalesce(pr.proargmodes::text[], array_fill('i'::text, ARRAY[pr.pronargs])) AS modes,
			   pr.proargnames AS argnames, pr.provariadic <> 0 AS isvar,
			   pr.prorettype AS ret, pr.proretset AS retset
		  FROM pg_proc pr
		  LEFT JOIN pg_aggregate ag ON ag.aggfnoid = pr.oid
		 WHERE ((pr.pronamespace = 'pg_catalog'::regnamespace AND pr.proname = ANY (fn_names))
				OR (pr.pronamespace::regnamespace::name = crypto_schema AND pr.proname = ANY (crypto_names)))
		   AND (pr.prokind = 'f' OR (pr.prokind = 'a' AND ag.aggkind = 'n' AND pr.provariadic = 0))
	LOOP
		-- Pseudo-types a plpgsql function cannot take or give back, or that
		-- have no concrete stand-in here (ranges, enums, internal, ...).
		CONTINUE WHEN EXISTS (SELECT FROM unnest(p.types) u(x) JOIN pg_type ty ON ty.oid = u.x
							   WHERE ty.typtype = 'p' AND u.x <> ALL (ok_pseudo));
		CONTINUE WHEN (SELECT typtype FROM pg_type WHERE oid = p.ret) = 'p'
			AND p.ret <> ALL (fam_a || fam_b || ARRAY['void'::regtype::oid])
			AND NOT (p.ret = 'record'::regtype AND p.retset AND p.modes && ARRAY['o', 't']);
		CONTINUE WHEN p.modes && ARRAY['o', 't', 'b'] AND NOT p.retset;
		IF p.types || p.ret && (fam_a || fam_b) THEN
			FOREACH sa IN ARRAY CASE WHEN p.types || p.ret && fam_a THEN scalars ELSE ARRAY[0::oid] END LOOP
				FOREACH sb IN ARRAY CASE WHEN p.types || p.ret && fam_b THEN scalars ELSE ARRAY[0::oid] END LOOP
					v := ARRAY(SELECT CASE WHEN x = ANY (fam_a) THEN
											CASE WHEN x = ANY (arrays) THEN (SELECT typarray FROM pg_type WHERE oid = sa) ELSE sa END
										WHEN x = ANY (fam_b) THEN
											CASE WHEN x = ANY (arrays) THEN (SELECT typarray FROM pg_type WHERE oid = sb) ELSE sb END
										ELSE x END
								 FROM unnest(p.types) WITH ORDINALITY u(x, o) ORDER BY o);
					vr := CASE WHEN p.ret = ANY (fam_a) THEN
								   CASE WHEN p.ret = ANY (arrays) THEN (SELECT typarray FROM pg_type WHERE oid = sa) ELSE sa END
							   WHEN p.ret = ANY (fam_b) THEN
								   CASE WHEN p.ret = ANY (arrays) THEN (SELECT typarray FROM pg_type WHERE oid = sb) ELSE sb END
							   ELSE p.ret END;
					INSERT INTO todo VALUES (p.kind, p.schema, p.name, v, p.modes, p.argnames, p.types, p.isvar,
											 vr, p.ret, p.retset, 'polymorphic');
				END LOOP;
			END LOOP;
		ELSIF anyoid = ANY (p.types) THEN
			anypos := ARRAY(SELECT o FROM unnest(p.types) WITH ORDINALITY u(x, o) WHERE x = anyoid ORDER BY o);
			-- VARIADIC "any" becomes VARIADIC text[] only: with another
			-- element type, a call that mixes in string literals would fail
			-- to parse (jsonb_build_object('key', 1.5)) instead of calling.
			FOREACH sa IN ARRAY CASE WHEN cardinality(anypos) = 2 THEN core
									 WHEN p.isvar THEN ARRAY['text'::regtype::oid] ELSE scalars END LOOP
				FOREACH sb IN ARRAY CASE WHEN cardinality(anypos) = 2 THEN core ELSE ARRAY[sa] END LOOP
					v := p.types;
					FOR k IN 1 .. cardinality(anypos) LOOP
						t := CASE WHEN k = 2 THEN sb ELSE sa END;
						IF p.isvar AND anypos[k] = cardinality(p.types) THEN
							t := (SELECT typarray FROM pg_type WHERE oid = t);
						END IF;
						v[anypos[k]] := t;
					END LOOP;
					INSERT INTO todo VALUES (p.kind, p.schema, p.name, v, p.modes, p.argnames, p.types, p.isvar,
											 p.ret, p.ret, p.retset, 'any');
				END LOOP;
			END LOOP;
		ELSE
			INSERT INTO todo VALUES (p.kind, p.schema, p.name, p.types, p.modes, p.argnames, p.types, p.isvar,
									 p.ret, p.ret, p.retset, 'same');
			FOR i IN 1 .. cardinality(p.types) LOOP
				CONTINUE WHEN p.modes[i] NOT IN ('i', 'b') OR (p.isvar AND i = cardinality(p.types));
				t := p.types[i];
				FOR c IN
					SELECT x FROM unnest(casters) x
					 WHERE x <> t AND (EXISTS (SELECT FROM pg_cast WHERE castsource = x AND casttarget = t AND castcontext = 'i')
									   OR (t = ANY (stringish) AND x = 'text'::regtype))
				LOOP
					v := p.types;
					v[i] := c;
					CONTINUE WHEN EXISTS (SELECT FROM pg_proc o WHERE o.pronamespace = p.schema::regnamespace
											AND o.proname = p.name
											AND string_to_array(o.proargtypes::text, ' ')::oid[]
												= ARRAY(SELECT x FROM unnest(v) WITH ORDINALITY u(x, o)
														 WHERE p.modes[o] IN ('i', 'b', 'v') ORDER BY o));
					INSERT INTO todo VALUES (p.kind, p.schema, p.name, v, p.modes, p.argnames, p.types, p.isvar,
											 p.ret, p.ret, p.retset, 'cast');
				END LOOP;
			END LOOP;
		END IF;
	END LOOP;

	-- Binary operators.
	FOR p IN
		SELECT o.oprname::text AS name, ARRAY[o.oprleft, o.oprright] AS types, o.oprresult AS ret
		  FROM pg_operator o
		 WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b' AND o.oprname = ANY (op_names)
	LOOP
		CONTINUE WHEN EXISTS (SELECT FROM unnest(p.types) u(x)
							   WHERE u.x <> ALL (fam_a || fam_b || casters
												 || ARRAY(SELECT typarray FROM pg_type WHERE oid = ANY (casters))));
		IF p.types || p.ret && (fam_a || fam_b) THEN
			FOREACH sa IN ARRAY scalars LOOP
				v := ARRAY(SELECT CASE WHEN x = ANY (arrays) THEN (SELECT typarray FROM pg_type WHERE oid = sa)
									   WHEN x = ANY (fam_a || fam_b) THEN sa ELSE x END
							 FROM unnest(p.types) WITH ORDINALITY u(x, o) ORDER BY o);
				vr := CASE WHEN p.ret = ANY (arrays) THEN (SELECT typarray FROM pg_type WHERE oid = sa)
						   WHEN p.ret = ANY (fam_a || fam_b) THEN sa ELSE p.ret END;
				INSERT INTO todo VALUES ('operator', 'pg_catalog', p.name, v, NULL, NULL, p.types, false, vr, p.ret, false, 'polymorphic');
			END LOOP;
		ELSE
			INSERT INTO todo VALUES ('operator', 'pg_catalog', p.name, p.types, NULL, NULL, p.types, false, p.ret, p.ret, false, 'same');
			-- An untyped literal on one side is taken for the other side's
			-- type when exact matches are sought: jsonb ->> 'key' finds a
			-- ->>(jsonb, jsonb) before pg_catalog's ->>(jsonb, text).
			IF current_setting('planter.unknown', true) = 'on' AND p.types[1] <> p.types[2] THEN
				FOREACH t IN ARRAY p.types LOOP
					CONTINUE WHEN EXISTS (SELECT FROM pg_operator o WHERE o.oprnamespace = 'pg_catalog'::regnamespace
											AND o.oprname = p.name AND o.oprleft = t AND o.oprright = t);
					INSERT INTO todo VALUES ('operator', 'pg_catalog', p.name, ARRAY[t, t], NULL, NULL, p.types, false, p.ret, p.ret, false, 'unknown');
				END LOOP;
			END IF;
			FOR i IN 1 .. 2 LOOP
				t := p.types[i];
				FOR c IN
					SELECT x FROM unnest(casters) x
					 WHERE x <> t AND (EXISTS (SELECT FROM pg_cast WHERE castsource = x AND casttarget = t AND castcontext = 'i')
									   OR (t = ANY (stringish) AND x = 'text'::regtype))
				LOOP
					v := p.types;
					v[i] := c;
					CONTINUE WHEN EXISTS (SELECT FROM pg_operator o WHERE o.oprnamespace = 'pg_catalog'::regnamespace
											AND o.oprname = p.name AND o.oprleft = v[1] AND o.oprright = v[2]);
					INSERT INTO todo VALUES ('operator', 'pg_catalog', p.name, v, NULL, NULL, p.types, false, p.ret, p.ret, false, 'cast');
				END LOOP;
			END LOOP;
		END IF;
	END LOOP;

	-- Create each once.
	FOR p IN SELECT DISTINCT ON (kind, name, args) * FROM todo ORDER BY kind, name, args, why LOOP
		n := n + 1;
		ins := ARRAY(SELECT o FROM unnest(p.args) WITH ORDINALITY u(x, o)
					  WHERE p.modes IS NULL OR p.modes[o] IN ('i', 'b', 'v') ORDER BY o);
		sig := format('%s(%s)', p.name,
					  array_to_string(ARRAY(SELECT format_type(p.args[u.pos], NULL) FROM unnest(ins) u(pos)), ', '));
		label := p.kind || ' ' || sig;
		-- The arguments as the genuine function takes them.
		call := array_to_string(ARRAY(
			SELECT CASE WHEN p.modes[u.pos] = 'v' THEN 'VARIADIC ' ELSE '' END || '$' || u.num
				   || CASE WHEN p.orig[u.pos] = p.args[u.pos] OR p.orig[u.pos] = ANY (ok_pseudo) THEN ''
						   ELSE '::' || format_type(p.orig[u.pos], NULL) END
			  FROM unnest(ins) WITH ORDINALITY u(pos, num) ORDER BY u.num), ', ');
		BEGIN
			IF p.kind = 'operator' THEN
				EXECUTE format($f$CREATE FUNCTION public.planted_op_%s(%s, %s) RETURNS %s
					LANGUAGE plpgsql SET search_path = pg_catalog AS $b$
					BEGIN
						PERFORM public.planted_hit(%L);
						RETURN $1%s OPERATOR(pg_catalog.%s) $2%s;
					END $b$$f$,
					n, format_type(p.args[1], NULL), format_type(p.args[2], NULL), format_type(p.ret, NULL), label,
					CASE WHEN p.orig[1] = p.args[1] OR p.orig[1] = ANY (ok_pseudo) THEN '' ELSE '::' || format_type(p.orig[1], NULL) END,
					p.name,
					CASE WHEN p.orig[2] = p.args[2] OR p.orig[2] = ANY (ok_pseudo) THEN '' ELSE '::' || format_type(p.orig[2], NULL) END);
				EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.planted_op_%s)',
							   p.name, format_type(p.args[1], NULL), format_type(p.args[2], NULL), n);
			ELSIF p.kind = 'aggregate' THEN
				-- The state collects the rows; the final function hands them,
				-- in order, to the genuine aggregate.
				EXECUTE format($f$CREATE FUNCTION public.planted_sfunc_%s(jsonb%s) RETURNS jsonb
					LANGUAGE plpgsql SET search_path = pg_catalog AS $b$
					BEGIN
						PERFORM public.planted_hit(%L);
						RETURN coalesce($1, '[]') || jsonb_build_array(jsonb_build_array(%s));
					END $b$$f$,
					n, coalesce((SELECT string_agg(', ' || format_type(x, NULL), '' ORDER BY o)
								   FROM unnest(p.args) WITH ORDINALITY u(x, o)), ''),
					label,
					coalesce((SELECT string_agg(format('$%s::text', o + 1), ', ' ORDER BY o)
								FROM unnest(p.args) WITH ORDINALITY u(x, o)), ''));
				EXECUTE format($f$CREATE FUNCTION public.planted_ffunc_%s(jsonb) RETURNS %s
					LANGUAGE plpgsql SET search_path = pg_catalog AS $b$
					DECLARE
						r %s;
					BEGIN
						PERFORM public.planted_hit(%L);
						SELECT %I.%I(%s) INTO r
						  FROM jsonb_array_elements(coalesce($1, '[]')) WITH ORDINALITY AS e(v, o);
						RETURN r;
					END $b$$f$,
					n, format_type(p.ret, NULL), format_type(p.ret, NULL), label || ' (final)', p.schema, p.name,
					CASE WHEN cardinality(p.args) = 0 THEN '*'
						 ELSE (SELECT string_agg(format('(e.v->>%s)::%s', o - 1, format_type(x, NULL))
												 || CASE WHEN p.orig[o] = x OR p.orig[o] = ANY (ok_pseudo) THEN ''
														 ELSE '::' || format_type(p.orig[o], NULL) END, ', ' ORDER BY o)
								 FROM unnest(p.args) WITH ORDINALITY u(x, o)) || ' ORDER BY e.o' END);
				EXECUTE format('CREATE AGGREGATE public.%I(%s) (SFUNC = public.planted_sfunc_%s, STYPE = jsonb, FINALFUNC = public.planted_ffunc_%s)',
							   p.name,
							   CASE WHEN cardinality(p.args) = 0 THEN '*'
									ELSE array_to_string(ARRAY(SELECT format_type(x, NULL) FROM unnest(p.args) x), ', ') END,
							   n, n);
			ELSE
				EXECUTE format($f$CREATE FUNCTION public.%I(%s) RETURNS %s%s
					LANGUAGE plpgsql SET search_path = pg_catalog AS $b$
					BEGIN
						PERFORM public.planted_hit(%L);
						%s
					END $b$$f$,
					p.name,
					array_to_string(ARRAY(
						SELECT CASE p.modes[o] WHEN 'o' THEN 'OUT ' WHEN 't' THEN 'OUT ' WHEN 'b' THEN 'INOUT '
											   WHEN 'v' THEN 'VARIADIC ' ELSE '' END
							   || coalesce(quote_ident(nullif(p.argnames[o], '')) || ' ', '') || format_type(x, NULL)
						  FROM unnest(p.args) WITH ORDINALITY u(x, o) ORDER BY o), ', '),
					CASE WHEN p.retset THEN 'SETOF ' ELSE '' END,
					CASE WHEN (SELECT count(*) FROM unnest(p.modes) m WHERE m IN ('o', 't', 'b')) > 1 THEN 'record'
						 ELSE format_type(p.ret, NULL) END,
					label,
					CASE WHEN p.retset THEN format('RETURN QUERY SELECT * FROM %I.%I(%s);', p.schema, p.name, call)
						 WHEN p.ret = 'void'::regtype THEN format('PERFORM %I.%I(%s);', p.schema, p.name, call)
						 ELSE format('RETURN %I.%I(%s);', p.schema, p.name, call) END);
			END IF;
			INSERT INTO public.planted_objects VALUES (p.kind, p.name, sig);
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.planted_skipped VALUES (p.kind, p.name, sig, SQLERRM);
		END;
	END LOOP;
END
$gen$;
SQL
	return;
}

1;
