# shellcheck shell=bash
# test/lib/common.sh -- shared helpers for vectorbea's test, demo and
# benchmark scripts.  Source it; do not execute it.
#
#   vb_ensure_packages [PKG...]  install (root) or list (non-root) the Debian
#                                packages the build and the tests need, and
#                                PKG... (e.g. "${VB_FUZZ_PACKAGES[@]}")
#   vb_as_ordinary_user SCRIPT [ARGS...]
#                                as root: re-run SCRIPT as the system user
#                                "vectorbea" from a private copy of the tree
#                                (initdb and postgres refuse to run as root);
#                                never returns.  Otherwise: returns at once.
#   vb_build                     build with -Werror and stage a private
#                                installation in $PWD/tmp_install; exports
#                                VB_BINDIR and PGXS_DIR
#   vb_start_server DATADIR PORT start a server (initdb first if needed) with
#                                shared_preload_libraries = 'vectorbea';
#                                exports PGHOST/PGPORT (and VB_PGHOST/VB_PGPORT)
#   vb_stop_server DATADIR       stop it
#
# Knobs (environment): VB_BUILD_DIR (default /var/tmp/vectorbea-build),
# VB_USER (default vectorbea).

VB_PG_MAJOR=15
VB_PG_LIBDIR=/usr/lib/postgresql/$VB_PG_MAJOR
VB_PG_SHAREDIR=/usr/share/postgresql/$VB_PG_MAJOR
VB_PG_CONFIG=$VB_PG_LIBDIR/bin/pg_config

VB_REQUIRED_PACKAGES=(
	postgresql-15
	postgresql-server-dev-15
	libcurl4-openssl-dev
	libjansson-dev
	libipc-run-perl
	make
	gcc
	python3-psycopg2
	ca-certificates
	graphviz
	postgresql-15-cron
	python3-psycopg
	nodejs
	$(command -v npm >/dev/null 2>&1 || echo npm)	# NodeSource's nodejs bundles npm and Conflicts: npm
)

# What the fuzz build adds (test/fuzz/run): clang with its sanitizer and
# libFuzzer runtimes, and llvm-symbolizer for readable reports.
VB_FUZZ_PACKAGES=(clang libclang-rt-dev llvm)

# Root of the source tree this file belongs to (test/lib/ -> ../..).
VB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

vb_log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------
vb_ensure_packages() {
	local pkg status missing=()
	for pkg in "${VB_REQUIRED_PACKAGES[@]}" "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) || status=
		case $status in
			ii*) ;;
			*) missing+=("$pkg") ;;
		esac
	done
	[ ${#missing[@]} -eq 0 ] && return 0

	if [ "$(id -u)" -ne 0 ]; then
		vb_log "vectorbea: missing Debian packages: ${missing[*]}"
		vb_log "install them with:"
		vb_log "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
		exit 1
	fi

	vb_log "vectorbea: installing missing packages: ${missing[*]}"
	if [ -z "${VB_APT_UPDATED:-}" ]; then
		apt-get update || { vb_log "vectorbea: apt-get update failed"; return 1; }
		VB_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
		|| { vb_log "vectorbea: apt-get install failed"; return 1; }
}

# ---------------------------------------------------------------------------
# Running as an ordinary user
# ---------------------------------------------------------------------------
vb_as_ordinary_user() {
	[ "$(id -u)" -eq 0 ] || return 0

	local script=${1:?vb_as_ordinary_user: SCRIPT required}
	shift
	local user=${VB_USER:-vectorbea}
	local dest=${VB_BUILD_DIR:-/var/tmp/vectorbea-build}
	local script_abs rel

	script_abs=$(realpath -e -- "$script") || { vb_log "vectorbea: no such script: $script"; exit 1; }
	case $script_abs in
		"$VB_ROOT"/*) rel=${script_abs#"$VB_ROOT"/} ;;
		*) vb_log "vectorbea: $script is not inside $VB_ROOT"; exit 1 ;;
	esac
	dest=$(realpath -m -- "$dest")
	case "$dest/" in
		/ | "$VB_ROOT"/* ) vb_log "vectorbea: refusing build dir $dest (inside the source tree or /)"; exit 1 ;;
	esac
	case "$VB_ROOT/" in
		"$dest"/*) vb_log "vectorbea: refusing build dir $dest (contains the source tree)"; exit 1 ;;
	esac

	if ! id -u "$user" >/dev/null 2>&1; then
		useradd --system --create-home --shell /bin/bash "$user" \
			|| { vb_log "vectorbea: could not create user $user"; exit 1; }
	fi
	local home
	home=$(getent passwd "$user" | cut -d: -f6)
	if [ -z "$home" ] || [ ! -d "$home" ]; then
		home=/var/lib/$user
		if ! { mkdir -p "$home" && chown "$user:" "$home" && usermod -d "$home" "$user"; }; then
			vb_log "vectorbea: could not create a home for $user"
			exit 1
		fi
	fi

	# One run at a time per build directory.
	exec 9>"$dest.lock" || exit 1
	flock 9 || exit 1

	# Stop servers a previous (killed) run may have left in the build dir.
	if [ -d "$dest" ]; then
		local pidfile
		while IFS= read -r pidfile; do
			runuser -u "$user" -- "$VB_PG_LIBDIR/bin/pg_ctl" stop -D "$(dirname "$pidfile")" \
				-m immediate -w -t 20 >/dev/null 2>&1 || true
		done < <(find "$dest" -name postmaster.pid -type f 2>/dev/null)
	fi
	rm -rf -- "$dest" || exit 1
	mkdir -p -- "$dest" && chown "$user:" "$dest" && chmod 755 "$dest" || exit 1

	# Copy the tree (tracked or not) as the user, so the copy is theirs and
	# the original checkout is only read.
	tar -C "$VB_ROOT" -cf - \
		--exclude=.git \
		--exclude='*.o' --exclude='*.so' --exclude='*.bc' --exclude='*.d' \
		--anchored \
		--exclude=./tmp_install \
		--exclude='./tmp_check*' \
		--exclude=./tmp_fuzz \
		--exclude=./results \
		--exclude=./results_regress \
		--exclude=./output_iso \
		--exclude=./log \
		--exclude=./regression.diffs \
		--exclude=./regression.out \
		--exclude=./bench/results \
		--exclude=./bench/node/node_modules \
		. \
	| runuser -u "$user" -- tar -C "$dest" -xf - --no-same-owner \
	|| { vb_log "vectorbea: copying the source tree to $dest failed"; exit 1; }

	local envv=(
		"HOME=$home" "USER=$user" "LOGNAME=$user" "SHELL=/bin/bash"
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		"LANG=C.UTF-8"
		"VB_ORIG_ROOT=$VB_ROOT" "VB_AS_USER=1"
	)
	local v
	for v in CI TERM TZ PG_TEST_EXTRA PG_TEST_TIMEOUT_DEFAULT PG_TEST_NOCLEAN PGISOLATIONTIMEOUT \
		PROVE_FLAGS VB_TEST_BUDGET VB_DIFF_LINES VB_CHAOS_SEED VB_CHAOS_TASKS VB_CHAOS_FAULTS VB_CHAOS_DEADLINE; do
		[ -n "${!v+x}" ] && envv+=("$v=${!v}")
	done

	vb_log "vectorbea: running as user '$user' in $dest (logs and results stay there)"
	local rc=0
	(cd "$dest" && exec runuser -u "$user" -- env -i "${envv[@]}" bash "$dest/$rel" "$@") </dev/null || rc=$?
	# Tell an EXIT trap of the calling script that the child did all the
	# reporting.
	# shellcheck disable=SC2034
	VB_HANDED_OFF=1
	exit "$rc"
}

# ---------------------------------------------------------------------------
# Build and private installation
# ---------------------------------------------------------------------------
vb__pg_stamp() {
	# The lib and extension folders too: a package that adds an extension
	# (pg_cron) must reach the staged copy.
	printf '%s|%s|%s|%s|%s\n' \
		"$(dpkg-query -W -f='${Version}' postgresql-$VB_PG_MAJOR 2>/dev/null)" \
		"$(stat -c '%Y:%s' "$VB_PG_LIBDIR/bin/postgres" 2>/dev/null)" \
		"$(stat -c '%Y' "$VB_PG_SHAREDIR/postgres.bki" 2>/dev/null)" \
		"$(stat -c '%Y' "$VB_PG_LIBDIR/lib" 2>/dev/null)" \
		"$(stat -c '%Y' "$VB_PG_SHAREDIR/extension" 2>/dev/null)"
}

vb_build() {
	local inst=$PWD/tmp_install
	PGXS_DIR=$VB_PG_LIBDIR/lib/pgxs
	VB_BINDIR=$inst$VB_PG_LIBDIR/bin
	export PGXS_DIR VB_BINDIR

	make -s -j"$(nproc)" PG_CONFIG="$VB_PG_CONFIG" COPT=-Werror || return 1

	local stamp
	stamp=$(vb__pg_stamp)
	if [ ! -x "$VB_BINDIR/postgres" ] || [ ! -f "$inst$VB_PG_SHAREDIR/postgres.bki" ] \
		|| [ "$(cat "$inst/.vb_pg_stamp" 2>/dev/null)" != "$stamp" ]; then
		rm -rf -- "$inst" || return 1
		mkdir -p -- "$inst$(dirname "$VB_PG_LIBDIR")" "$inst$(dirname "$VB_PG_SHAREDIR")" || return 1
		# Real copies: postgres locates share/ and lib/ relative to its own
		# resolved path, so symlinks back into /usr would defeat staging.
		cp -R -P --preserve=mode,timestamps -- "$VB_PG_LIBDIR" "$inst$VB_PG_LIBDIR" || return 1
		cp -R -P --preserve=mode,timestamps -- "$VB_PG_SHAREDIR" "$inst$VB_PG_SHAREDIR" || return 1
		printf '%s\n' "$stamp" > "$inst/.vb_pg_stamp" || return 1
	fi

	make -s install DESTDIR="$inst" PG_CONFIG="$VB_PG_CONFIG" >/dev/null || return 1
}

# ---------------------------------------------------------------------------
# A standalone server for demos and benchmarks
# ---------------------------------------------------------------------------
vb__bindir() {
	if [ -n "${VB_BINDIR:-}" ] && [ -x "$VB_BINDIR/pg_ctl" ]; then
		printf '%s\n' "$VB_BINDIR"
	else
		vb_log "vectorbea: VB_BINDIR is not set; call vb_build first"
		return 1
	fi
}

vb_start_server() {
	local datadir=${1:?vb_start_server: DATADIR required} port=${2:?vb_start_server: PORT required}
	local bindir sockdir
	bindir=$(vb__bindir) || return 1
	if [ "$(id -u)" -eq 0 ]; then
		vb_log "vectorbea: PostgreSQL cannot run as root; call vb_as_ordinary_user first"
		return 1
	fi
	datadir=$(realpath -m -- "$datadir")
	sockdir=$datadir/sock
	if [ $(( ${#sockdir} + 20 )) -gt 107 ]; then
		vb_log "vectorbea: socket path under $datadir is too long for a unix socket; use a shorter DATADIR"
		return 1
	fi

	if [ ! -s "$datadir/PG_VERSION" ]; then
		mkdir -p -- "$datadir" || return 1
		local initlog
		initlog=$(mktemp) || return 1
		if ! "$bindir/initdb" -D "$datadir" -A trust -E UTF8 --no-locale >"$initlog" 2>&1; then
			cat "$initlog" >&2
			rm -f -- "$initlog"
			return 1
		fi
		rm -f -- "$initlog"
		printf "\ninclude_if_exists = 'vectorbea_server.conf'\n" >> "$datadir/postgresql.conf"
	fi
	mkdir -p -- "$sockdir" && chmod 700 "$sockdir" || return 1

	if "$bindir/pg_ctl" status -D "$datadir" >/dev/null 2>&1; then
		vb_log "vectorbea: server in $datadir is already running"
	else
		local sq="'" sockconf
		sockconf=${sockdir//$sq/$sq$sq}
		{
			echo "# Written by vb_start_server on every start."
			echo "listen_addresses = '127.0.0.1'"
			echo "port = $port"
			echo "unix_socket_directories = '$sockconf'"
			echo "shared_preload_libraries = 'vectorbea'"
		} > "$datadir/vectorbea_server.conf" || return 1
		if ! "$bindir/pg_ctl" start -D "$datadir" -l "$datadir/server.log" -w -t 60 >/dev/null; then
			vb_log "vectorbea: server failed to start; last lines of $datadir/server.log:"
			tail -n 30 "$datadir/server.log" >&2 2>/dev/null
			return 1
		fi
	fi
	VB_PGHOST=$sockdir
	VB_PGPORT=$port
	PGHOST=$sockdir
	PGPORT=$port
	export VB_PGHOST VB_PGPORT PGHOST PGPORT
}

vb_stop_server() {
	local datadir=${1:?vb_stop_server: DATADIR required} bindir
	bindir=$(vb__bindir) || return 1
	[ -s "$datadir/PG_VERSION" ] || return 0
	"$bindir/pg_ctl" status -D "$datadir" >/dev/null 2>&1 || return 0
	"$bindir/pg_ctl" stop -D "$datadir" -m fast -w -t 60 >/dev/null \
		|| "$bindir/pg_ctl" stop -D "$datadir" -m immediate -w -t 30 >/dev/null
}
