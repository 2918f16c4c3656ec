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
#
# Several nodes on one PostgreSQL behind HAProxy (docs/cluster.md):
#   --node URL      this server is one node of a cluster; URL is how the other nodes reach it
#                   directly (http://10.0.0.2:8443). Adds, once, KIT_PROVISIONING_CLUSTER_ARGS
#                   (--node-id, --node-url, --cluster-secret-file, --trusted-proxy, --db) to the
#                   options file; the shared secret /etc/kit-provisioning/cluster-secret (0600)
#                   is generated once: copy it to the other nodes before installing them.
#   --db URL        the nodes' PostgreSQL (postgresql://user:password@host/db), with --node
#   --proxy ADDRESS the load balancer's address as the nodes see it (repeatable; default
#                   127.0.0.1,::1: HAProxy on this host), the nodes' --trusted-proxy
#   --lb-node HOST:PORT   install Debian's HAProxy here in front of these nodes (repeatable,
#                   one per node; this host's own node too, e.g. 127.0.0.1:8443): writes
#                   /etc/haproxy/kit-provisioning.cfg from haproxy-kit.cfg.in, reloaded (links
#                   kept) when it changes
#   --lb-cert PEM   HAProxy's certificate chain and key in one file: HTTPS on 443, HTTP on 80
#                   redirected to it; without it, HTTP on 80 only (TLS terminated elsewhere)
#   --lb-only       install HAProxy only, not the server (a load-balancer host)

# shellcheck source-path=SCRIPTDIR source=install-common.sh
. "$(dirname "$0")/install-common.sh"

USAGE="usage: $0 [--turn] [--node URL [--db URL] [--proxy ADDRESS]...] [--lb-node HOST:PORT... [--lb-cert PEM] [--lb-only]] PUBLIC_URL [ADMIN_EMAIL]"
TURN=""
NODE_URL=""
DB=""
PROXIES=""
LB_NODES=""
LB_CERT=""
LB_ONLY=""
# value OPTION VALUE: VALUE, or the usage and exit 2 if there is none.
value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        say "$1 needs a value"
        say "$USAGE"
        exit 2
    fi
    printf '%s\n' "$2"
}
while [ $# -gt 0 ]; do
    case "$1" in
        --turn) TURN=1 ;;
        --node) NODE_URL="$(value "$@")"; shift ;;
        --db) DB="$(value "$@")"; shift ;;
        --proxy) PROXIES="${PROXIES:+$PROXIES,}$(value "$@")"; shift ;;
        --lb-node) LB_NODES="$LB_NODES $(value "$@")"; shift ;;
        --lb-cert) LB_CERT="$(value "$@")"; shift ;;
        --lb-only) LB_ONLY=1 ;;
        --) shift; break ;;
        -*) say "unknown option $1"; say "$USAGE"; exit 2 ;;
        *) break ;;
    esac
    shift
done
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

# check_options: refuse what cannot be written into a configuration line, before any change.
check_options() {
    for node in $LB_NODES; do
        case "$node" in
            *[!A-Za-z0-9.:_\[\]-]* | *: | [!A-Za-z0-9\[]* | *[!0-9]) bad="$node" ;;
            *:[0-9]*) bad="" ;;
            *) bad="$node" ;;
        esac
        if [ -n "$bad" ]; then
            say "--lb-node $bad: HOST:PORT expected (e.g. 10.0.0.2:8443, [2001:db8::2]:8443)"
            exit 2
        fi
    done
    case "$LB_CERT" in
        *[!A-Za-z0-9._/-]*) say "--lb-cert: a plain absolute path only"; exit 2 ;;
        "" | /*) ;;
        *) say "--lb-cert: a plain absolute path only"; exit 2 ;;
    esac
    case "$NODE_URL" in
        "") ;;
        http://*:[0-9]* | https://*:[0-9]*)
            case "$NODE_URL" in
                *[!A-Za-z0-9.:/_\[\]-]*) say "--node $NODE_URL: http://HOST:PORT expected"; exit 2 ;;
            esac
            ;;
        *) say "--node $NODE_URL: http://HOST:PORT expected (how the other nodes reach it)"; exit 2 ;;
    esac
    case "$PROXIES" in
        *[!0-9A-Fa-f.:/,]*) say "--proxy $PROXIES: addresses or networks only"; exit 2 ;;
    esac
    case "$DB" in
        *[\"\\\$\`\ \	]*) say "--db: no spaces, quotes, backslashes or \$ in the URL"; exit 2 ;;
        "" | postgresql://* | postgresql+asyncpg://*) ;;
        *) say "--db: a postgresql://… URL (several nodes share one PostgreSQL)"; exit 2 ;;
    esac
    if [ -n "$NODE_URL" ] && [ -z "$DB" ] && ! grep -q '^[^#]*--db postgresql' "$ENV_FILE" 2>/dev/null
    then
        say "--node: the nodes share one PostgreSQL: give --db postgresql://user:password@host/db"
        exit 2
    fi
    if [ -n "$LB_ONLY" ] && [ -z "$LB_NODES" ]; then
        say "--lb-only: give the nodes with --lb-node HOST:PORT"
        exit 2
    fi
}

# install_node: this server is one node of a cluster (see the top of this file).
install_node() {
    secret_file="$ROOT/etc/kit-provisioning/cluster-secret"
    # Generated once, 0600, the server's; the same file on every node (copy it there first).
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | write_once "$secret_file" 0600
    system chown kit-provisioning:kit-provisioning "$secret_file"
    if grep -q '^KIT_PROVISIONING_CLUSTER_ARGS=' "$ENV_FILE"; then
        return 0
    fi
    port="${NODE_URL##*:}"
    cat >>"$ENV_FILE" <<ENV
# Added by install-server.sh --node: this server is one node of a cluster behind a load balancer
# (docs/cluster.md); the load balancer's address is trusted for X-Forwarded-For.
KIT_PROVISIONING_CLUSTER_ARGS="--node-id $(uname -n)-${port%%/*} --node-url $NODE_URL --cluster-secret-file /etc/kit-provisioning/cluster-secret --trusted-proxy ${PROXIES:-127.0.0.1,::1}${DB:+ --db $DB}"
ENV
    say "added the cluster options to $ENV_FILE"
    CHANGED=1
}

# render_lb_config TARGET: haproxy-kit.cfg.in filled in for $LB_NODES and $LB_CERT.
render_lb_config() {
    servers="$1.servers"
    number=0
    : >"$servers"
    for node in $LB_NODES; do
        number=$((number + 1))
        printf '    server node%d %s\n' "$number" "$node" >>"$servers"
    done
    if [ -n "$LB_CERT" ]; then tls='s/ *# tls$//'; else tls='/# tls$/d'; fi
    sed -e "$tls" -e "s|@HTTP_BIND@|:80|" -e "s|@HTTPS_BIND@|:443|" -e "s|@CERT@|$LB_CERT|" \
        -e "s|@STATS_SOCKET@|/run/haproxy/admin.sock|" -e "/^@SERVERS@\$/r $servers" \
        -e '/^@SERVERS@$/d' "$HERE/haproxy-kit.cfg.in" >"$1"
    rm -f "$servers"
}

# install_lb: Debian's HAProxy in front of the nodes (see the top of this file).
install_lb() {
    apt_install haproxy
    lb_dir="$ROOT/etc/haproxy"
    config="$lb_dir/kit-provisioning.cfg"
    mkdir -p "$lb_dir"
    render_lb_config "$config.rendered"
    if [ -z "$DRYRUN" ] && ! haproxy -c -q -f "$config.rendered"; then
        rm -f "$config.rendered"
        say "HAProxy refuses the configuration (above); $config is unchanged"
        exit 1
    fi
    before="$CHANGED"
    CHANGED=""
    install_file "$config.rendered" "$config" 0640
    rm -f "$config.rendered"
    system chown root:haproxy "$config"
    config_changed="$CHANGED"
    CHANGED=""
    install_file "$HERE/haproxy-kit.conf" \
        "$ROOT/etc/systemd/system/haproxy.service.d/kit-provisioning.conf" 0644
    unit_changed="$CHANGED"
    CHANGED=""
    install_file "$HERE/haproxy-kit-sysctl.conf" "$ROOT/etc/sysctl.d/60-kit-haproxy.conf" 0644
    [ -z "$CHANGED" ] || system sysctl -q -p /etc/sysctl.d/60-kit-haproxy.conf
    CHANGED="$before"
    enable_units haproxy.service
    if [ -n "$unit_changed" ]; then
        system systemctl restart haproxy.service  # a new configuration file: its path is argv
    else
        # A reload keeps every kit's link on the old process (until hard-stop-after).
        refresh haproxy.service reload-or-restart "$config_changed"
    fi
}

check_options
if [ -n "$LB_ONLY" ]; then
    install_lb
    say "done: check with  systemctl status haproxy"
    exit 0
fi
if [ ! -e "$ENV_FILE" ] && [ -z "$PUBLIC_URL" ]; then
    say "$USAGE"
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
    "$VENV/bin/kit-provisioning" user add "$ADMIN" --role national --data-dir "$STATE" ${DB:+--db "$DB"} \
        || say "admin $ADMIN not added (see above)"
fi
system chown -R kit-provisioning:kit-provisioning "$STATE"
[ -z "$TURN" ] || install_turn
[ -z "$NODE_URL" ] || install_node

install_file "$HERE/kit-provisioning.service" \
    "$ROOT/etc/systemd/system/kit-provisioning.service" 0644
enable_units kit-provisioning.service
refresh kit-provisioning.service restart "$CHANGED"
[ -z "$LB_NODES" ] || install_lb
say "done${CHANGED:+ (updated)}: check with  systemctl status kit-provisioning"
