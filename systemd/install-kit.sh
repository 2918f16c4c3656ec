#!/bin/sh
# Set up a classroom kit on a fresh Debian 12, or upgrade it.
#
#   sudo systemd/install-kit.sh SERVER_URL ENROLLMENT_CODE [KIT_NAME]
#   sudo systemd/install-kit.sh                 (upgrade an enrolled kit: no code needed)
#
# Run from the source tree (or with KIT_WHEEL=hybrid_classroom-X.Y.Z-py3-none-any.whl). It
# installs the Debian packages the kit needs, creates the users kit (the agent: video, audio)
# and kit-kiosk (the touch screen), installs the agent in /opt/kit/venv, writes
# /etc/kit/agent.toml (0640 root:kit) if there is none (an admin's file is never touched),
# enrolls the kit once (the credential in /var/lib/kit is kept across upgrades), installs the
# units and (re)starts them. Running it twice changes nothing; running it with a newer version
# upgrades the agent and restarts it. Options for tests and image builds: see install-common.sh.

# shellcheck source-path=SCRIPTDIR source=install-common.sh
. "$(dirname "$0")/install-common.sh"

SERVER_URL="${1:-}"
CODE="${2:-}"
NAME="${3:-}"
VENV="$ROOT/opt/kit/venv"
STATE="$ROOT/var/lib/kit"
CONFIG="$ROOT/etc/kit/agent.toml"

if [ ! -e "$STATE/server-link.json" ] && { [ -z "$SERVER_URL" ] || [ -z "$CODE" ]; }; then
    say "usage: $0 SERVER_URL ENROLLMENT_CODE [KIT_NAME]   (the kit is not enrolled yet)"
    exit 2
fi
apt_install python3 python3-venv libportaudio2 libasound2 alsa-utils v4l-utils \
    cage chromium fonts-dejavu-core
ensure_user kit /var/lib/kit video,audio
ensure_user kit-kiosk /var/lib/kit-kiosk video,render,input

mkdir -p "$ROOT/opt/kit" "$ROOT/etc/kit" "$STATE"
chmod 0755 "$ROOT/etc/kit"
chmod 0700 "$STATE"
install_venv "$VENV" kit  # the agent: aiortc, PyAV, OpenCV… (no database layer)

# 0640 root:kit: the agent (user kit) reads it, nobody else does (it may hold TURN secrets),
# and the agent cannot rewrite it. A file from an older install loses its bits for others.
write_once "$CONFIG" 0640 <<'TOML'
# kit-agent configuration (every key: /opt/kit/venv/…/agent/example-config.toml).
# Written once by install-kit.sh; upgrades never change it. After an edit:
#   systemctl reload kit-agent   (restarts it now, or at the end of the class in progress)
# If this file becomes unreadable the agent runs on its last good copy
# (/var/lib/kit/last-good-config.toml) and the kiosk says so.
state_dir = "/var/lib/kit"

[http]
listen = "0.0.0.0:8080"

[camera]
# `kit-agent devices` lists what is plugged in; /dev/v4l/by-id/… names survive re-plugging.
device = "/dev/video0"

[document]
device = "/dev/video2"

[microphone]
device = "default"
TOML
chmod o-rwx "$CONFIG"
system chown root:kit "$CONFIG"

if [ -e "$STATE/server-link.json" ]; then
    say "already enrolled (credential in $STATE/server-link.json kept)"
else
    set --
    if [ -n "$NAME" ]; then set -- --name "$NAME"; fi
    "${KIT_ENROLL_AGENT:-$VENV/bin/kit-agent}" enroll "$SERVER_URL" "$CODE" --state-dir "$STATE" "$@"
    CHANGED=1  # a running agent reads its credential at start
fi
system chown -R kit:kit "$STATE"

install_file "$HERE/kit-agent.service" "$ROOT/etc/systemd/system/kit-agent.service" 0644
AGENT_CHANGED="$CHANGED"
CHANGED=""
install_file "$HERE/kit-kiosk.service" "$ROOT/etc/systemd/system/kit-kiosk.service" 0644
KIOSK_CHANGED="$CHANGED"
CHANGED="$AGENT_CHANGED$KIOSK_CHANGED"
system systemctl set-default graphical.target
enable_units kit-agent.service kit-kiosk.service
# Not "restart": a class may be live. On reload the agent restarts itself on the new version at
# once if idle, else when the teacher presses Stop (docs/systemd.md). The kiosk page reloads by
# itself when it sees the new version, so Chromium restarts only for a new kiosk unit.
refresh kit-agent.service reload-or-restart "$AGENT_CHANGED"
[ -z "$AGENT_CHANGED" ] || say "the agent restarts on the new version now, or at the end of the class in progress"
refresh kit-kiosk.service restart "$KIOSK_CHANGED"
say "done${CHANGED:+ (updated)}: check with  systemctl status kit-agent kit-kiosk"
