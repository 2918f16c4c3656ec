# shellcheck shell=sh disable=SC2034  # CHANGED is read by the scripts that source this file
# Shared by install-kit.sh and install-server.sh (sourced, not run).
#
# ROOT=/some/dir      install into that directory instead of / (tests, image builds); implies
#                     the dry run below, since users and services belong to the real system
# KIT_INSTALL_DRYRUN=1  print, instead of running, what changes the system outside the files:
#                     apt-get, useradd/usermod, chown, systemctl
# KIT_PYTHON          the Python that creates the virtualenv (default: python3)
# KIT_PIP_OPTS        extra pip options (e.g. --index-url …, or --no-deps in tests)
# KIT_WHEEL           install this wheel instead of the source tree the script is in
# KIT_FORCE_REINSTALL=1  reinstall even if the same version is installed

set -eu

ROOT="${ROOT:-}"
ROOT="${ROOT%/}"
HERE="$(cd "$(dirname "$0")" && pwd)"
SOURCE="${KIT_SOURCE:-$(dirname "$HERE")}"
PYTHON="${KIT_PYTHON:-python3}"
DRYRUN="${KIT_INSTALL_DRYRUN:-}"
if [ -n "$ROOT" ]; then DRYRUN=1; fi
CHANGED=""  # set when files or the venv changed; the calling script reports it

say() { printf '%s\n' "$*" >&2; }

# A command that changes the running system (packages, users, ownership, services).
system() {
    if [ -n "$DRYRUN" ]; then
        say "[dry run] $*"
    else
        "$@"
    fi
}

apt_install() {
    missing=""
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        system apt-get update -qq
        # shellcheck disable=SC2086
        system env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
}

# ensure_user NAME HOME GROUPS: a system user with its own group, no login, in GROUPS.
ensure_user() {
    if id -u "$1" >/dev/null 2>&1; then
        [ -z "$3" ] || system usermod --append --groups "$3" "$1"
    else
        system useradd --system --user-group --home-dir "$2" --no-create-home \
            --shell /usr/sbin/nologin ${3:+--groups "$3"} "$1"
    fi
}

# version_of SOURCE_OR_WHEEL: the package version it holds.
version_of() {
    case "$1" in
        *.whl) basename "$1" | cut -d- -f2 ;;
        *) "$PYTHON" -c 'import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$1/pyproject.toml" ;;
    esac
}

# install_venv VENV EXTRA: create it if needed; install the package with the dependencies of
# EXTRA (kit or server: pyproject.toml's optional dependencies) unless that version is there.
install_venv() {
    venv="$1"
    extra="$2"
    package="${KIT_WHEEL:-$SOURCE}"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    wanted="$(version_of "$package")"
    installed="$("$venv/bin/python" -I -c 'import importlib.metadata as m
try:
    print(m.version("hybrid-classroom"))
except m.PackageNotFoundError:
    print("none")')"
    if [ "$installed" = "$wanted" ] && [ -z "${KIT_FORCE_REINSTALL:-}" ]; then
        say "hybrid-classroom $wanted already installed in $venv"
        return 0
    fi
    say "installing hybrid-classroom $wanted in $venv (was: $installed)"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --upgrade ${KIT_PIP_OPTS:-} "${package}[${extra}]"
    CHANGED=1
}

# install_file SOURCE TARGET MODE: copy, keeping the target untouched if it is the same.
install_file() {
    mkdir -p "$(dirname "$2")"
    if ! cmp -s "$1" "$2"; then
        cp "$1" "$2.new"
        chmod "$3" "$2.new"
        mv "$2.new" "$2"
        CHANGED=1
    fi
}

# write_once TARGET MODE: stdin becomes TARGET unless it exists (an admin's file is kept).
write_once() {
    if [ -e "$1" ]; then
        say "keeping $1"
        cat >/dev/null
    else
        mkdir -p "$(dirname "$1")"
        cat >"$1.new"
        chmod "$2" "$1.new"
        mv "$1.new" "$1"
        say "wrote $1"
    fi
}

# enable_units UNIT…: the unit files as installed, enabled at boot.
enable_units() {
    system systemctl daemon-reload
    system systemctl enable "$@"
}

# refresh UNIT VERB CHANGED: UNIT runs the installed version: "systemctl VERB UNIT" if CHANGED
# is set (new version, new unit file), else only started if it is not running.
refresh() {
    if [ -n "$3" ]; then
        system systemctl "$2" "$1"
    else
        system systemctl start "$1"
    fi
}
