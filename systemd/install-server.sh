#!/bin/sh
# Set up the provisioning server on a fresh Debian 12, or upgrade it.
#
#   sudo systemd/install-server.sh [--turn] PUBLIC_URL [ADMIN_EMAIL]
#   sudo systemd/install-server.sh [--turn]     (upgrade: the options file is kept)
#
# PUBLIC_URL is how kits and pupils reach the server (https://… behind your TLS proxy).
# ADMIN_EMAIL creates the first (national) admin; the password is read from stdin. Installs
# the server in /opt/kit-provisioning/venv, writes /etc/kit-provisioning/provisioning.env if
# there is none (never overwritten), keeps the SQLite data in /var/lib/kit-provisioning, and
# installs and (re)starts kit-provisioning.service. Idempotent; options: install-common.sh.
#
# --turn also installs Debian's coturn beside the server (docs/systemd.md, "TURN"): a secret
# shared with the server (/etc/kit-provisioning/turn-secret, 0600, generated once), coturn's
# configuration from turnserver.conf.in (UDP/TCP 3478, TLS 5349, relay to public addresses
# only), and the server's --turn-url/--turn-secret-file options (KIT_PROVISIONING_TURN_ARGS in
# the options file, added once). Environment:
#   KIT_TURN_HOST   the name (or address) in the TURN URLs and the realm (default: PUBLIC_URL's)
#   KIT_TURN_CERT, KIT_TURN_KEY   coturn's TLS certificate chain and key (PEM; default: a
#                   self-signed one, made once, that browsers refuse for turns: give yours)

# shellcheck source-path=SCRIPTDIR source=install-common.sh
. "$(dirname "$0")/install-common.sh"

TURN=""
if [ "${1:-}" = "--turn" ]; then
    TURN=1
    shift
fi
PUBLIC_URL="${1:-}"
ADMIN="${2:-}"
VENV="$ROOT/opt/kit-provisioning/venv"
STATE="$ROOT/var/lib/kit-provisioning"
ENV_FILE="$ROOT/etc/kit-provisioning/provisioning.env"

# url_host URL: the host part of an http(s) URL.
url_host() {
    host="${1#*://}"
    host="${host%%/*}"
    host="${host##*@}"
    printf '%s\n' "${host%:*}"
}

# install_turn: coturn beside the server, sharing a secret with it (see the top of this file).
install_turn() {
    apt_install coturn openssl
    turn_host="${KIT_TURN_HOST:-}"
    if [ -z "$turn_host" ]; then
        url="$PUBLIC_URL"
        [ -n "$url" ] || url="$(sed -n 's/.*--public-url \([^ "]*\).*/\1/p' "$ENV_FILE" | head -n 1)"
        turn_host="$(url_host "$url")"
    fi
    case "$turn_host" in
        "" | *[!A-Za-z0-9.:-]*)
            say "--turn: no usable TURN host name ($turn_host): set KIT_TURN_HOST"
            exit 2
            ;;
    esac
    coturn_dir="$ROOT/etc/coturn"
    secret_file="$ROOT/etc/kit-provisioning/turn-secret"
    mkdir -p "$coturn_dir"
    chmod 0750 "$coturn_dir"
    system chown root:turnserver "$coturn_dir"

    # The secret: generated once, 0600, the server's; coturn gets a copy in its configuration
    # (it has no option to read a secret file). To change it: edit the file, run this again.
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | write_once "$secret_file" 0600
    system chown kit-provisioning:kit-provisioning "$secret_file"
    secret="$(cat "$secret_file")"
    case "$secret" in
        "" | *[!A-Za-z0-9._~+/=-]*) say "$secret_file: letters, digits and ._~+/=- only"; exit 2 ;;
    esac

    cert="${KIT_TURN_CERT:-/etc/coturn/self-signed-cert.pem}"
    key="${KIT_TURN_KEY:-/etc/coturn/self-signed-key.pem}"
    if [ -z "${KIT_TURN_CERT:-}" ] && [ ! -e "$ROOT$cert" ]; then
        case "$turn_host" in *[!0-9.]*) name="DNS:$turn_host" ;; *) name="IP:$turn_host" ;; esac
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=$turn_host" -addext "subjectAltName=$name" \
            -keyout "$ROOT$key" -out "$ROOT$cert" 2>/dev/null
        chmod 0640 "$ROOT$key"
        system chown root:turnserver "$ROOT$key"
        say "wrote a self-signed certificate for TURN over TLS: browsers refuse it, give yours"
    fi
    case "$cert$key" in
        *[!A-Za-z0-9._/-]*) say "KIT_TURN_CERT, KIT_TURN_KEY: plain paths only"; exit 2 ;;
    esac

    sed -e "s|@LISTENING_PORT@|3478|" -e "s|@TLS_LISTENING_PORT@|5349|" \
        -e "s|@SECRET@|$secret|" -e "s|@REALM@|$turn_host|" -e "s|@CERT@|$cert|" \
        -e "s|@PKEY@|$key|" "$HERE/turnserver.conf.in" >"$coturn_dir/turnserver.conf.rendered"
    TURN_CHANGED=""
    before="$CHANGED"
    CHANGED=""
    install_file "$coturn_dir/turnserver.conf.rendered" "$coturn_dir/turnserver.conf" 0640
    rm -f "$coturn_dir/turnserver.conf.rendered"
    install_file "$HERE/coturn-kit.conf" \
        "$ROOT/etc/systemd/system/coturn.service.d/kit-provisioning.conf" 0644
    TURN_CHANGED="$CHANGED"
    CHANGED="$before"
    system chown root:turnserver "$coturn_dir/turnserver.conf"

    if ! grep -q '^KIT_PROVISIONING_TURN_ARGS=' "$ENV_FILE"; then
        cat >>"$ENV_FILE" <<ENV
# Added by install-server.sh --turn: the coturn beside this server (docs/systemd.md, "TURN").
KIT_PROVISIONING_TURN_ARGS="--turn-secret-file /etc/kit-provisioning/turn-secret --turn-url turn:$turn_host:3478?transport=udp --turn-url turn:$turn_host:3478?transport=tcp --turn-url turns:$turn_host:5349?transport=tcp"
ENV
        say "added the TURN options to $ENV_FILE"
        CHANGED=1
    fi
    enable_units coturn.service
    refresh coturn.service restart "$TURN_CHANGED"
}

if [ ! -e "$ENV_FILE" ] && [ -z "$PUBLIC_URL" ]; then
    say "usage: $0 [--turn] PUBLIC_URL [ADMIN_EMAIL]"
    exit 2
fi
apt_install python3 python3-venv
ensure_user kit-provisioning /var/lib/kit-provisioning ""
mkdir -p "$ROOT/opt/kit-provisioning" "$ROOT/etc/kit-provisioning" "$STATE"
chmod 0700 "$STATE"
# The server reads its TURN secret in there: root's, the server's group may enter.
chmod 0750 "$ROOT/etc/kit-provisioning"
system chown root:kit-provisioning "$ROOT/etc/kit-provisioning"
install_venv "$VENV" server  # the database layer, no media stack

write_once "$ENV_FILE" 0640 <<ENV
# Options of kit-provisioning serve (kit-provisioning serve --help). Written once by
# install-server.sh; upgrades never change it. After an edit: systemctl restart kit-provisioning
# PostgreSQL instead of SQLite: add --db postgresql://kit@/kit (socket auth).
# Behind a reverse proxy on this host: add --trusted-proxy 127.0.0.1,::1 so that sign-in delays,
# enrollment and relay rate limits key on each client's X-Forwarded-For address, not the proxy's
# (the proxy must set it: nginx proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for).
KIT_PROVISIONING_ARGS="--http 0.0.0.0:8443 --public-url $PUBLIC_URL"
ENV
system chown root:kit-provisioning "$ENV_FILE"

if [ -n "$ADMIN" ]; then
    "$VENV/bin/kit-provisioning" user add "$ADMIN" --role national --data-dir "$STATE" \
        || say "admin $ADMIN not added (see above)"
fi
system chown -R kit-provisioning:kit-provisioning "$STATE"
[ -z "$TURN" ] || install_turn

install_file "$HERE/kit-provisioning.service" \
    "$ROOT/etc/systemd/system/kit-provisioning.service" 0644
enable_units kit-provisioning.service
refresh kit-provisioning.service restart "$CHANGED"
say "done${CHANGED:+ (updated)}: check with  systemctl status kit-provisioning"
