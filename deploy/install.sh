#!/usr/bin/env bash
# Particle bench recovery kiosk: turn a fresh Raspberry Pi OS (Bookworm, Pi 4 or Pi 5) into a kiosk that
# boots into the app on its touchscreen. Run from the kiosk's source folder:
#
#   sudo deploy/install.sh               install or update (safe to run again: it converges)
#   sudo deploy/install.sh --uninstall   remove what it installed; the journal and firmware library stay
#   deploy/install.sh --root DIR         every file step under DIR; the system steps (apt-get, useradd,
#                                        udevadm, systemctl, pip) are printed, not run. For tests and review.
#
# What it does: apt packages (cage, foot, libusb, the lgpio build tools); a `kiosk` system user in the groups
# gpio, plugdev, dialout, video and input; a virtual environment in /opt/particle-kiosk/venv (Bookworm refuses
# system-wide pip) with the kiosk and lgpio (gpiozero's only pin factory that works on a Pi 5); the udev rules;
# the PAM service and the systemd units of the bench service (it owns the bench; socket /run/particle-kiosk/
# bench.sock, the kiosk group's) and of the touchscreen session, its client; /usr/local/bin/kiosk; the example config as
# /etc/particle-kiosk/kiosk.toml (never over an edited one); /var/lib/particle-kiosk for the journal and the
# firmware library. See deploy/BUILD-A-BENCH.md.
set -euo pipefail

readonly APP=particle-kiosk
readonly KIOSK_USER=kiosk
readonly KIOSK_GROUPS=(gpio plugdev dialout video input)
readonly PREFIX=/opt/particle-kiosk
readonly VENV=$PREFIX/venv
readonly SHARE=$PREFIX/share
readonly ETC=/etc/particle-kiosk
readonly CONFIG=$ETC/kiosk.toml
readonly STATE=/var/lib/particle-kiosk
readonly UNIT=/etc/systemd/system/$APP.service
readonly TOUCH_UNIT=/etc/systemd/system/$APP-touch.service
readonly BENCH_UNIT=/etc/systemd/system/$APP-bench.service
readonly PAM=/etc/pam.d/$APP
readonly RULES=/etc/udev/rules.d/60-particle-kiosk.rules
readonly SLOT_RULES=/etc/udev/rules.d/61-particle-kiosk-slots.rules
readonly WRAPPER=/usr/local/bin/kiosk
readonly APT_PACKAGES=(python3-venv python3-dev swig build-essential libusb-1.0-0 cage foot fonts-dejavu-core uhubctl)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
readonly HERE SRC

ROOT=""
UNINSTALL=0

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$0"
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 2
}

while (($#)); do
    case $1 in
        --root)
            (($# >= 2)) || die "--root needs a folder, e.g. --root /tmp/kiosk-root"
            ROOT=$2
            shift 2
            ;;
        --root=*)
            ROOT=${1#--root=}
            shift
            ;;
        --uninstall)
            UNINSTALL=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            die "unknown argument '$1' (use --root DIR, --uninstall or --help)"
            ;;
    esac
done

if [[ -n $ROOT ]]; then
    [[ $ROOT == /* ]] || ROOT="$PWD/$ROOT"
    [[ $ROOT != / ]] || die "--root / is the real system: run without --root (as root) instead"
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
elif ((EUID != 0)); then
    die "run as root: sudo $0 $*  (or try it in a folder: $0 --root /tmp/kiosk-root)"
fi

# A path on the target system, under --root when given.
dest() {
    printf '%s%s' "$ROOT" "$1"
}

say() {
    printf '%s\n' "$*"
}

# A command as a shell would read it back (arguments with spaces quoted).
shown() {
    local arg out=""
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
            out+="$arg "
        else
            out+="$(printf '%q' "$arg") "
        fi
    done
    printf '%s' "${out% }"
}

# A system step: run it, or under --root print what would run.
system() {
    if [[ -n $ROOT ]]; then
        say "would run: $(shown "$@")"
    else
        say "+ $(shown "$@")"
        "$@"
    fi
}

# Install one of our files (replacing our previous version).
put() {
    local src=$1 target=$2 mode=$3
    install -D -m "$mode" "$src" "$(dest "$target")"
    say "installed $target"
}

remove() {
    local target
    for target in "$@"; do
        if [[ -e $(dest "$target") || -L $(dest "$target") ]]; then
            rm -rf -- "$(dest "$target")"
            say "removed $target"
        fi
    done
}

# The per-slot device names (/dev/particle-kiosk/slotN-usb, slotN-serial) from the config's usb_port keys
# ($1: the config file to read, $2: its name on the target system).
slot_rules() {
    python3 - "$1" "$2" <<'PY'
import sys
import tomllib

path, shown = sys.argv[1], sys.argv[2]
print("# Particle bench recovery kiosk: a stable name per slot, from the USB port in the config.")
print(f"# Written by deploy/install.sh from {shown}: run it again after changing a slot's usb_port.")
try:
    with open(path, "rb") as f:
        slots = tomllib.load(f).get("slots", [])
except (OSError, tomllib.TOMLDecodeError) as exc:
    print(f"# (no slot names: {shown} could not be read: {exc})")
    slots = []
for n, slot in enumerate(slots if isinstance(slots, list) else [], 1):
    port = slot.get("usb_port") if isinstance(slot, dict) else None
    if not isinstance(port, str) or not port.replace("-", "").replace(".", "").isdigit():
        print(f"# slot {n}: no usb_port, so no stable name")
        continue
    name = slot.get("name", f"slot {n}")
    print(f"# slot {n} ({name}): USB port {port}")
    print(f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", KERNEL=="{port}", ATTR{{idVendor}}=="2b04|1d50", '
          f'SYMLINK+="particle-kiosk/slot{n}-usb"')
    print(f'SUBSYSTEM=="tty", KERNELS=="{port}", SUBSYSTEMS=="usb", ATTRS{{idVendor}}=="2b04|1d50", '
          f'SYMLINK+="particle-kiosk/slot{n}-serial"')
PY
}

check_python() {
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "Python 3.11 or newer is needed (Raspberry Pi OS Bookworm has it): $(python3 --version 2>&1)"
}

check_os() {
    local codename=""
    if [[ -r /etc/os-release ]]; then
        codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
    fi
    if [[ $codename != bookworm ]]; then
        say "note: this is '${codename:-an unknown release}', not Bookworm: the steps are the same, but untested there"
    fi
}

warn_touch() {
    # foot 1.13 (Bookworm's) has no touchscreen input: taps do not reach the app (checked in its binary).
    local version
    command -v foot >/dev/null 2>&1 || return 0
    version=$(foot --version 2>/dev/null | sed -n 's/^foot version: \([0-9]*\.[0-9]*\).*/\1/p')
    if [[ -n $version ]] && printf '%s\n1.13\n' "$version" | sort -V -C; then
        say "note: foot $version has no touchscreen input: $APP-touch.service turns the touchscreen into a" \
            "pointer for it (see deploy/BUILD-A-BENCH.md, 'Touch')."
    fi
}

install_kiosk() {
    check_python
    [[ -n $ROOT ]] || check_os

    say "== packages"
    system apt-get update
    system env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"

    say "== the kiosk user"
    local group
    for group in "${KIOSK_GROUPS[@]}"; do
        if [[ -n $ROOT ]] || ! getent group "$group" >/dev/null; then
            system groupadd --system -f "$group"
        fi
    done
    local joined
    joined=$(IFS=,; printf '%s' "${KIOSK_GROUPS[*]}")
    if [[ -z $ROOT ]] && id "$KIOSK_USER" >/dev/null 2>&1; then
        system usermod --append --groups "$joined" "$KIOSK_USER"
    else
        system useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
            --groups "$joined" --comment "Particle bench recovery kiosk" "$KIOSK_USER"
    fi

    say "== journal and firmware library: $STATE"
    mkdir -p "$(dest "$STATE")/firmware"
    chmod 2775 "$(dest "$STATE")" "$(dest "$STATE")/firmware"
    say "made $STATE (journal.sqlite and firmware/ live here; kept by --uninstall)"
    system chown -R "$KIOSK_USER:$KIOSK_USER" "$STATE"

    say "== the kiosk in $VENV"
    if [[ ! -x $(dest "$VENV")/bin/python ]]; then
        if [[ -n $ROOT ]]; then
            python3 -m venv --without-pip "$(dest "$VENV")"
        else
            python3 -m venv "$VENV"
        fi
        say "made the virtual environment $VENV"
    fi
    system "$VENV/bin/python" -m pip install --upgrade pip
    system "$VENV/bin/python" -m pip uninstall -y particle-bench-kiosk
    system "$VENV/bin/python" -m pip install lgpio evdev "$SRC"
    put "$HERE/session/kiosk" "$WRAPPER" 0755
    put "$HERE/BUILD-A-BENCH.md" "$SHARE/BUILD-A-BENCH.md" 0644
    put "$HERE/WIRING.md" "$SHARE/WIRING.md" 0644
    put "$HERE/kiosk.example.toml" "$SHARE/kiosk.example.toml" 0644

    say "== configuration: $ETC"
    if [[ -e $(dest "$CONFIG") ]]; then
        if cmp -s "$HERE/kiosk.example.toml" "$(dest "$CONFIG")"; then
            say "kept $CONFIG (the example, unchanged: edit it to match your wiring)"
        else
            say "kept $CONFIG (edited: never overwritten; the current example is $SHARE/kiosk.example.toml)"
        fi
    else
        put "$HERE/kiosk.example.toml" "$CONFIG" 0644
    fi
    put "$HERE/session/environment" "$ETC/environment" 0644
    put "$HERE/session/foot.ini" "$ETC/foot.ini" 0644

    say "== udev rules"
    put "$HERE/udev/60-particle-kiosk.rules" "$RULES" 0644
    local slots
    slots=$(mktemp)
    slot_rules "$(dest "$CONFIG")" "$CONFIG" >"$slots"
    put "$slots" "$SLOT_RULES" 0644
    rm -f "$slots"
    system udevadm control --reload-rules
    system udevadm trigger --subsystem-match=usb --subsystem-match=tty --subsystem-match=gpio

    say "== the bench service and the touchscreen session"
    put "$HERE/systemd/particle-kiosk-bench.service" "$BENCH_UNIT" 0644
    put "$HERE/pam/particle-kiosk" "$PAM" 0644
    put "$HERE/systemd/particle-kiosk.service" "$UNIT" 0644
    put "$HERE/systemd/particle-kiosk-touch.service" "$TOUCH_UNIT" 0644
    system systemctl daemon-reload
    system systemctl enable "$APP-bench.service" "$APP.service" "$APP-touch.service"
    system systemctl set-default graphical.target
    if [[ -n $ROOT ]]; then
        say "would run: systemctl disable display-manager.service (only if a desktop's display manager is enabled)"
    elif systemctl is-enabled --quiet display-manager.service 2>/dev/null; then
        say "a desktop display manager is enabled: it would fight the kiosk for the screen"
        system systemctl disable display-manager.service
    fi
    warn_touch

    say ""
    say "Installed. Next:"
    say "  1. edit $CONFIG to match the wiring (deploy/WIRING.md), then: sudo $0 (updates the slot names)"
    say "  2. check the bench: sudo -u $KIOSK_USER kiosk doctor   (with devices in the slots: --active)"
    say "     the bench service owns the bench once it runs (sudo systemctl start $APP-bench); a technician's"
    say "     \`kiosk recover\` goes through it: add them to the $KIOSK_USER group (sudo usermod -aG $KIOSK_USER NAME)"
    say "  3. import firmware: sudo -u $KIOSK_USER kiosk firmware import RELEASE.zip"
    say "  4. reboot: the kiosk starts on the touchscreen (logs: journalctl -u $APP -b)"
}

uninstall_kiosk() {
    say "== stopping the touchscreen session and the bench service"
    system systemctl disable --now "$APP.service" "$APP-touch.service" "$APP-bench.service"
    remove "$UNIT" "$TOUCH_UNIT" "$BENCH_UNIT" "$PAM"
    system systemctl daemon-reload
    system systemctl start getty@tty1.service

    say "== udev rules"
    remove "$RULES" "$SLOT_RULES"
    system udevadm control --reload-rules

    say "== the kiosk"
    remove "$WRAPPER" "$PREFIX" "$ETC/environment" "$ETC/foot.ini"
    if [[ -e $(dest "$CONFIG") ]]; then
        if cmp -s "$HERE/kiosk.example.toml" "$(dest "$CONFIG")"; then
            remove "$CONFIG"
        else
            say "kept $CONFIG (edited by you)"
        fi
    fi
    if [[ -d $(dest "$ETC") ]]; then
        if rmdir "$(dest "$ETC")" 2>/dev/null; then
            say "removed $ETC"
        else
            say "kept $ETC (it still holds files)"
        fi
    fi

    say "== the kiosk user"
    if [[ -n $ROOT ]] || id "$KIOSK_USER" >/dev/null 2>&1; then
        system userdel "$KIOSK_USER"
    fi
    say ""
    say "Uninstalled. Kept: $STATE (the journal and the firmware library; delete it by hand if you want)."
}

if ((UNINSTALL)); then
    uninstall_kiosk
else
    install_kiosk
fi
