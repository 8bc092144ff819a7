#!/usr/bin/env bash
# Install the Moltbot gateway as a systemd service.
#   scripts/install-systemd.sh --user     a user unit (~/.config/systemd/user), no root needed
#   scripts/install-systemd.sh --system   a system unit (/etc/systemd/system), run as root;
#                                         the service runs as --run-as USER (default: $SUDO_USER)
# Options: --python PATH (default: this repo's .venv), --state-dir DIR, --dry-run (print the unit).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
scope=user
python="$repo/.venv/bin/python"
state_dir=""
dry_run=0
run_as=${SUDO_USER:-}

while [ $# -gt 0 ]; do
  case "$1" in
    --user) scope=user ;;
    --system) scope=system ;;
    --python) python="$2"; shift ;;
    --state-dir) state_dir="$2"; shift ;;
    --run-as) run_as="$2"; shift ;;
    --dry-run) dry_run=1 ;;
    *) echo "install-systemd.sh: unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$scope" = system ]; then
  state_dir=${state_dir:-/var/lib/moltbot}
  unit_dir=/etc/systemd/system
  wanted_by=multi-user.target
  if [ -z "$run_as" ] || [ "$run_as" = root ]; then
    echo "install-systemd.sh: pass --run-as USER: the gateway should not run as root" >&2
    exit 2
  fi
  user_line="User=$run_as"
else
  state_dir=${state_dir:-$HOME/.moltbot}
  unit_dir=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
  wanted_by=default.target
  user_line=""
fi

if [ ! -x "$python" ]; then
  echo "install-systemd.sh: no Python at $python (run 'make run' or pass --python)" >&2
  exit 2
fi

unit=$(sed -e "s|@PYTHON@|$python|g" -e "s|@STATE_DIR@|$state_dir|g" \
           -e "s|@REPO@|$repo|g" -e "s|@WANTED_BY@|$wanted_by|g" -e "s|@USER_LINE@|$user_line|g" \
           "$repo/scripts/moltbot-gateway.service")

if [ "$dry_run" = 1 ]; then
  printf '%s\n' "$unit"
  exit 0
fi

mkdir -p "$unit_dir" "$state_dir"
chmod 700 "$state_dir"
if [ -n "$user_line" ]; then chown "$run_as" "$state_dir"; fi
printf '%s\n' "$unit" > "$unit_dir/moltbot-gateway.service"
if [ ! -f "$state_dir/moltbot.json" ]; then
  MOLTBOT_STATE_DIR="$state_dir" "$python" -m moltbot setup
  if [ -n "$user_line" ]; then chown "$run_as" "$state_dir/moltbot.json"; fi
fi

if [ "$scope" = system ]; then
  systemctl daemon-reload
  echo "installed $unit_dir/moltbot-gateway.service; start it with: systemctl enable --now moltbot-gateway"
else
  systemctl --user daemon-reload
  echo "installed $unit_dir/moltbot-gateway.service; start it with: systemctl --user enable --now moltbot-gateway"
  echo "(to keep it running after logout: loginctl enable-linger $USER)"
fi
