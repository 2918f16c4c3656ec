#!/bin/sh
# Set up the provisioning server on a fresh Debian 12, or upgrade it.
#
#   sudo systemd/install-server.sh PUBLIC_URL [ADMIN_EMAIL]
#   sudo systemd/install-server.sh              (upgrade: the options file is kept)
#
# PUBLIC_URL is how kits and pupils reach the server (https://… behind your TLS proxy).
# ADMIN_EMAIL creates the first (national) admin; the password is read from stdin. Installs
# the server in /opt/kit-provisioning/venv, writes /etc/kit-provisioning/provisioning.env if
# there is none (never overwritten), keeps the SQLite data in /var/lib/kit-provisioning, and
# installs and (re)starts kit-provisioning.service. Idempotent; options: install-common.sh.

# shellcheck source-path=SCRIPTDIR source=install-common.sh
. "$(dirname "$0")/install-common.sh"

PUBLIC_URL="${1:-}"
ADMIN="${2:-}"
VENV="$ROOT/opt/kit-provisioning/venv"
STATE="$ROOT/var/lib/kit-provisioning"
ENV_FILE="$ROOT/etc/kit-provisioning/provisioning.env"

if [ ! -e "$ENV_FILE" ] && [ -z "$PUBLIC_URL" ]; then
    say "usage: $0 PUBLIC_URL [ADMIN_EMAIL]"
    exit 2
fi
apt_install python3 python3-venv
ensure_user kit-provisioning /var/lib/kit-provisioning ""
mkdir -p "$ROOT/opt/kit-provisioning" "$ROOT/etc/kit-provisioning" "$STATE"
chmod 0700 "$STATE"
install_venv "$VENV"

write_once "$ENV_FILE" 0640 <<ENV
# Options of kit-provisioning serve (kit-provisioning serve --help). Written once by
# install-server.sh; upgrades never change it. After an edit: systemctl restart kit-provisioning
# PostgreSQL instead of SQLite: add --db postgresql://kit@/kit (socket auth).
KIT_PROVISIONING_ARGS="--http 0.0.0.0:8443 --public-url $PUBLIC_URL"
ENV
system chown root:kit-provisioning "$ENV_FILE"

if [ -n "$ADMIN" ]; then
    "$VENV/bin/kit-provisioning" user add "$ADMIN" --role national --data-dir "$STATE" \
        || say "admin $ADMIN not added (see above)"
fi
system chown -R kit-provisioning:kit-provisioning "$STATE"

install_file "$HERE/kit-provisioning.service" \
    "$ROOT/etc/systemd/system/kit-provisioning.service" 0644
enable_units kit-provisioning.service
refresh kit-provisioning.service restart "$CHANGED"
say "done${CHANGED:+ (updated)}: check with  systemctl status kit-provisioning"
