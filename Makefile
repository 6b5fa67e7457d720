# vectorbea — PGXS build.
#
# `make` builds the module, `make install` installs it into the PostgreSQL
# found by $(PG_CONFIG).  The full test suite (pg_regress, isolation, TAP)
# runs through test/run, which stages a private installation and never needs
# to write outside the checkout; see README.md.

EXTENSION = vectorbea
MODULE_big = vectorbea
OBJS = \
	src/vectorbea.o \
	src/install_guard.o \
	src/settings.o \
	src/crashpoint.o \
	src/clock.o \
	src/duration.o \
	src/status.o \
	src/jsonb_util.o \
	src/spi_util.o \
	src/subxact.o \
	src/redact.o \
	src/text_escape.o \
	src/encoding.o \
	src/retry.o \
	src/allowlist.o \
	src/resolve.o \
	src/http.o \
	src/provider_json.o \
	src/template.o \
	src/shmem.o \
	src/claim_marks.o \
	src/notify.o \
	src/events.o \
	src/state.o \
	src/check.o \
	src/tenants.o \
	src/llm_spec.o \
	src/gate_spec.o \
	src/wait_spec.o \
	src/validate.o \
	src/workflow.o \
	src/lease.o \
	src/due_items.o \
	src/sweep.o \
	src/limits.o \
	src/claim.o \
	src/complete.o \
	src/fail.o \
	src/cancel.o \
	src/custom_events.o \
	src/requeue.o \
	src/controls.o \
	src/retention.o \
	src/fork.o \
	src/waits.o \
	src/signals.o \
	src/votes.o \
	src/approvals.o \
	src/keys.o \
	src/llm_request.o \
	src/rate.o \
	src/budget.o \
	src/llm_cost.o \
	src/llm_answer.o \
	src/llm_recover.o \
	src/llm.o \
	src/scheduler.o

DATA = sql/vectorbea--0.1.0.sql sql/vectorbea--0.1.0--0.2.0.sql
PGFILEDESC = "vectorbea - durable AI agent workflows"

# Tests live under test/, as in pgvector: pg_regress inputs in
# test/regress/sql/ with their expected output in test/regress/expected/,
# isolation specs in test/isolation/specs/ and test/isolation/expected/.
# sql/ holds only the install and upgrade scripts.
REGRESS = $(sort $(patsubst test/regress/sql/%.sql,%,$(wildcard test/regress/sql/*.sql)))
REGRESS_OPTS = --inputdir=$(srcdir)/test/regress --temp-config=$(srcdir)/test/vectorbea.conf

ISOLATION = $(sort $(patsubst test/isolation/specs/%.spec,%,$(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation --temp-config=$(srcdir)/test/vectorbea.conf

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

SHLIB_LINK = -lcurl -ljansson

PG_CPPFLAGS = -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
