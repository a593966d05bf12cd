"""deploy/: install.sh into a temporary root (every file checked, the system steps printed and not run, a second
run changes nothing, an edited config is kept, --uninstall keeps the journal), the systemd unit through
`systemd-analyze verify`, the udev rules against the platform table, the example config against the kiosk's own
validation and against WIRING.md's pin map."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.platforms import PLATFORMS
from kiosk import doctor
from kiosk.config import load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
KIOSK_GROUPS = ("gpio", "plugdev", "dialout", "video", "input")
TUI = "/opt/particle-kiosk/venv/bin/kiosk tui --config /etc/particle-kiosk/kiosk.toml"
#: target path -> (source in deploy/, mode)
INSTALLED = {
    "etc/systemd/system/particle-kiosk.service": ("systemd/particle-kiosk.service", 0o644),
    "etc/systemd/system/particle-kiosk-touch.service": ("systemd/particle-kiosk-touch.service", 0o644),
    "etc/systemd/system/particle-kiosk-bench.service": ("systemd/particle-kiosk-bench.service", 0o644),
    "etc/pam.d/particle-kiosk": ("pam/particle-kiosk", 0o644),
    "etc/udev/rules.d/60-particle-kiosk.rules": ("udev/60-particle-kiosk.rules", 0o644),
    "etc/particle-kiosk/kiosk.toml": ("kiosk.example.toml", 0o644),
    "etc/particle-kiosk/environment": ("session/environment", 0o644),
    "etc/particle-kiosk/foot.ini": ("session/foot.ini", 0o644),
    "usr/local/bin/kiosk": ("session/kiosk", 0o755),
    "opt/particle-kiosk/share/BUILD-A-BENCH.md": ("BUILD-A-BENCH.md", 0o644),
    "opt/particle-kiosk/share/WIRING.md": ("WIRING.md", 0o644),
    "opt/particle-kiosk/share/kiosk.example.toml": ("kiosk.example.toml", 0o644),
}
#: Header pin of each BCM GPIO on the 40-pin header (Pi 4 and Pi 5 alike).
HEADER_PIN = {2: 3, 3: 5, 4: 7, 17: 11, 27: 13, 22: 15, 10: 19, 9: 21, 11: 23, 0: 27, 5: 29, 6: 31, 13: 33, 19: 35,
              26: 37, 14: 8, 15: 10, 18: 12, 23: 16, 24: 18, 25: 22, 8: 24, 7: 26, 1: 28, 12: 32, 16: 36, 20: 38,
              21: 40}  # fmt: skip


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)  # fmt: skip


def tree(root: Path) -> dict[str, str]:
    """Every file under root (the venv's own files aside) with its SHA-256 and mode."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("opt/particle-kiosk/venv/") or path.is_dir():
            continue
        found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + f" {path.stat().st_mode & 0o7777:o}"
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("root")
    proc = install(root)
    assert proc.returncode == 0, proc.stderr
    return root, proc.stdout


def test_every_file_is_installed(installed):
    root, _ = installed
    for target, (source, mode) in INSTALLED.items():
        path = root / target
        assert path.is_file(), target
        assert path.read_bytes() == (DEPLOY / source).read_bytes(), target
        assert path.stat().st_mode & 0o777 == mode, target
    state = root / "var/lib/particle-kiosk"
    assert (state / "firmware").is_dir()
    assert state.stat().st_mode & 0o7777 == 0o2775
    venv = root / "opt/particle-kiosk/venv"
    assert (venv / "pyvenv.cfg").is_file() and (venv / "bin/python").exists()
    extra = set(tree(root)) - set(INSTALLED) - {"etc/udev/rules.d/61-particle-kiosk-slots.rules"}
    assert not extra, f"files no test knows about: {extra}"


def test_system_steps_are_printed_not_run(installed):
    _, out = installed
    steps = [line.removeprefix("would run: ") for line in out.splitlines() if line.startswith("would run: ")]
    assert not any(line.startswith("+ ") for line in out.splitlines())  # nothing ran
    useradd = next(s for s in steps if s.startswith("useradd "))
    assert "--system" in useradd and useradd.endswith(" kiosk")
    assert f"--groups {','.join(KIOSK_GROUPS)}" in useradd and "--home-dir /var/lib/particle-kiosk" in useradd
    assert any(re.fullmatch(r"/opt/particle-kiosk/venv/bin/python -m pip install lgpio evdev /\S+", s) for s in steps)
    for step in ("udevadm control --reload-rules", "systemctl daemon-reload",
                 "systemctl enable particle-kiosk-bench.service particle-kiosk.service particle-kiosk-touch.service",
                 "chown -R kiosk:kiosk /var/lib/particle-kiosk"):  # fmt: skip
        assert step in steps, step
    apt = next(s for s in steps if "apt-get install" in s)
    for package in ("cage", "foot", "libusb-1.0-0", "python3-venv", "swig"):
        assert f" {package}" in apt


def test_a_second_run_changes_nothing_and_keeps_an_edited_config(tmp_path):
    assert install(tmp_path).returncode == 0
    first = tree(tmp_path)
    second = install(tmp_path)
    assert second.returncode == 0 and tree(tmp_path) == first
    assert "kept /etc/particle-kiosk/kiosk.toml (the example, unchanged" in second.stdout
    config = tmp_path / "etc/particle-kiosk/kiosk.toml"
    edited = config.read_text().replace('usb_port = "1-1.1"', 'usb_port = "3-1"')
    config.write_text(edited)
    third = install(tmp_path)
    assert third.returncode == 0 and "kept /etc/particle-kiosk/kiosk.toml (edited" in third.stdout
    assert config.read_text() == edited
    slots = (tmp_path / "etc/udev/rules.d/61-particle-kiosk-slots.rules").read_text()
    assert 'KERNELS=="3-1"' in slots and 'KERNELS=="1-1.1"' not in slots  # the names follow the config


def test_uninstall_removes_what_was_installed_and_keeps_the_journal(tmp_path):
    assert install(tmp_path).returncode == 0
    journal = tmp_path / "var/lib/particle-kiosk/journal.sqlite"
    journal.write_bytes(b"the bench's history")
    proc = install(tmp_path, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert journal.read_bytes() == b"the bench's history"
    assert tree(tmp_path) == {"var/lib/particle-kiosk/journal.sqlite": tree(tmp_path)[
        "var/lib/particle-kiosk/journal.sqlite"]}  # fmt: skip
    assert not (tmp_path / "opt/particle-kiosk").exists() and not (tmp_path / "etc/particle-kiosk").exists()
    assert ("would run: systemctl disable --now particle-kiosk.service particle-kiosk-touch.service "
            "particle-kiosk-bench.service") in proc.stdout
    assert not (tmp_path / "etc/systemd/system/particle-kiosk-bench.service").exists()
    assert "would run: userdel kiosk" in proc.stdout


def test_uninstall_keeps_an_edited_config(tmp_path):
    assert install(tmp_path).returncode == 0
    config = tmp_path / "etc/particle-kiosk/kiosk.toml"
    config.write_text(config.read_text() + "\n# tuned on the bench\n")
    proc = install(tmp_path, "--uninstall")
    assert proc.returncode == 0 and config.is_file() and "kept /etc/particle-kiosk/kiosk.toml" in proc.stdout


@pytest.mark.parametrize("args", [["--frobnicate"], ["--root"], ["--root", "/"]])
def test_bad_arguments_are_refused_with_a_reason(args):
    proc = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.startswith("install.sh: ")


def test_install_script_is_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make tools installs it)")
    proc = subprocess.run(["shellcheck", str(INSTALL), str(DEPLOY / "session/kiosk")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- the session -------------------------------------------------------------------------------------------------


def unit_entries(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, in order (a unit may repeat a key)."""
    entries: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1)
        entries.setdefault((section, key), []).append(value)
    return entries


def test_the_unit_starts_the_tui_in_foot_in_cage_on_tty1_restarts_it_and_falls_back_to_a_getty():
    unit = unit_entries((DEPLOY / "systemd/particle-kiosk.service").read_text())
    exec_start = unit[("Service", "ExecStart")][0]
    assert exec_start.startswith("/usr/bin/cage ") and " /usr/bin/foot " in exec_start
    assert exec_start.index("cage") < exec_start.index("foot") < exec_start.index(TUI) and exec_start.endswith(TUI)
    assert unit[("Service", "User")] == ["kiosk"] and unit[("Service", "TTYPath")] == ["/dev/tty1"]
    assert unit[("Service", "Restart")] == ["always"]
    assert unit[("Unit", "OnFailure")] == ["getty@tty1.service"]
    assert unit[("Unit", "Conflicts")] == ["getty@tty1.service"]
    assert unit[("Service", "PAMName")] == ["particle-kiosk"]  # deploy/pam/particle-kiosk
    assert unit[("Service", "EnvironmentFile")] == ["/etc/particle-kiosk/environment"]
    assert "pam_systemd.so" in (DEPLOY / "pam/particle-kiosk").read_text()


def _have(tool: str, package: str) -> bool:
    """Whether ``tool`` is on this machine, installing Debian's ``package`` when we may (root with apt)."""
    if shutil.which(tool):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", package], capture_output=True, env=env, timeout=600)
    return shutil.which(tool) is not None


def test_units_pass_systemd_analyze_verify(installed):
    root, _ = installed
    for tool, package in (("systemd-analyze", "systemd"), ("cage", "cage"), ("foot", "foot")):
        if not _have(tool, package):  # verify checks that ExecStart's programs exist
            pytest.skip(f"{tool} is not installed and cannot be here (make tools installs it)")
    unit = root / "etc/systemd/system/particle-kiosk.service"
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "particle-kiosk.service" not in proc.stderr, proc.stderr  # no warning about our unit either


def test_the_touch_bridge_unit_passes_systemd_analyze_verify(installed, tmp_path):
    if not _have("systemd-analyze", "systemd"):
        pytest.skip("systemd-analyze is not installed and cannot be here (make tools installs it)")
    root, _ = installed
    text = (root / "etc/systemd/system/particle-kiosk-touch.service").read_text()
    assert "ExecStart=/opt/particle-kiosk/venv/bin/kiosk touch-bridge" in text
    assert "RestartPreventExitStatus=3" in text  # no touchscreen: not restarted for ever
    # verify checks that ExecStart's program exists: this venv's kiosk stands in for the installed one
    unit = tmp_path / "particle-kiosk-touch.service"
    unit.write_text(text.replace("/opt/particle-kiosk/venv/bin/kiosk", str(Path(sys.executable).parent / "kiosk"))
                    .replace("EnvironmentFile=", "EnvironmentFile=-"))  # fmt: skip
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "particle-kiosk-touch.service" not in proc.stderr, proc.stderr


def test_foot_accepts_the_kiosk_config():
    if not _have("foot", "foot"):
        pytest.skip("foot is not installed (make tools installs it)")
    proc = subprocess.run(["foot", f"--config={DEPLOY / 'session/foot.ini'}", "--check-config"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_environment_puts_the_journal_and_library_under_var_lib(monkeypatch):
    from kiosk.commands.firmware_cmd import default_library
    from kiosk.commands.recover_cmd import default_journal

    env = dict(line.split("=", 1) for line in (DEPLOY / "session/environment").read_text().splitlines()
               if line and not line.startswith("#"))  # fmt: skip
    assert env["GPIOZERO_PIN_FACTORY"] == "lgpio"
    assert env["MALLOC_ARENA_MAX"] == "2"  # threads share two malloc arenas (see the file's comment)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert default_journal() == Path("/var/lib/particle-kiosk/journal.sqlite")
    assert default_library() == Path("/var/lib/particle-kiosk/firmware")


# --- udev ----------------------------------------------------------------------------------------------------------

UDEV_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "KERNELS", "DRIVER", "DRIVERS", "MODE", "GROUP",
             "OWNER", "SYMLINK", "GOTO", "LABEL", "RUN", "TAG"}  # fmt: skip
UDEV_BRACED = {"ATTR", "ATTRS", "ENV"}


def check_udev_syntax(text: str) -> None:
    """Every rule parses, uses keys udev knows with operators it allows, and every GOTO has its LABEL."""
    rules = doctor.parse_udev_rules(text)
    assert rules
    labels = {r.assigns.get("LABEL") for r in rules}
    for rule in rules:
        for key in [*rule.matches, *rule.assigns]:
            base = key.rstrip("!").split("{", 1)[0]
            assert base in UDEV_KEYS | UDEV_BRACED, f"unknown key {key} in {rule.text}"
            assert (base in UDEV_BRACED) == ("{" in key), f"{key} in {rule.text}"
        for key in ("SUBSYSTEMS", "KERNELS", "ATTRS", "DRIVERS"):
            assert not any(k.startswith(key) for k in rule.assigns), f"{key} can only match: {rule.text}"
        if "GOTO" in rule.assigns:
            assert rule.assigns["GOTO"] in labels


def test_udev_rules_parse():
    check_udev_syntax((DEPLOY / "udev/60-particle-kiosk.rules").read_text())


def test_udev_rules_cover_every_platform_in_both_modes_and_the_probes():
    rules = doctor.parse_udev_rules((DEPLOY / "udev/60-particle-kiosk.rules").read_text())
    ids = [(p.usb_vid, pid, p.name) for p in PLATFORMS if p.usb_vid for pid in (p.usb_pid_normal, p.usb_pid_dfu) if pid]
    assert len(ids) > 20 and (0x2B04, 0xD00D, "boron") in ids and (0x1D50, 0x607F, "core") in ids
    for vid, pid, name in [*ids, (0x0D28, 0x0204, "Particle Debugger"), (0x2E8A, 0x000C, "Pi Debug Probe")]:
        rule = doctor.rule_for(rules, vid, pid)
        assert rule is not None, f"{vid:04x}:{pid:04x} ({name}) has no rule"
        assert (rule.assigns["MODE"], rule.assigns["GROUP"]) == ("0660", "plugdev"), rule.text
        assert rule.assigns.get("ENV{ID_MM_DEVICE_IGNORE}") == "1", rule.text
    assert doctor.udev_rule_problems((DEPLOY / "udev/60-particle-kiosk.rules").read_text()) == []
    # A device that is not Particle's gets nothing from these rules.
    assert doctor.rule_for(rules, 0x046D, 0xC52B) is None
    for vid, pid in ((0x2B04, 0xC00D), (0x2B04, 0xC020), (0x1D50, 0x607D)):  # the serial ports: dialout, no MM
        tty = [r for r in rules if r.matches.get("SUBSYSTEM") == "tty"
               and doctor.udev_pattern_matches(r.matches["ATTRS{idVendor}"], f"{vid:04x}")
               and doctor.udev_pattern_matches(r.matches.get("ATTRS{idProduct}", "*"), f"{pid:04x}")
               and "GROUP" in r.assigns]  # fmt: skip
        assert tty and tty[-1].assigns["GROUP"] == "dialout" and tty[-1].assigns["ENV{ID_MM_DEVICE_IGNORE}"] == "1"
    assert "0666" not in (DEPLOY / "udev/60-particle-kiosk.rules").read_text().split("never 0666")[1]


def test_slot_rules_written_from_the_config_parse_and_name_each_port(installed):
    root, _ = installed
    text = (root / "etc/udev/rules.d/61-particle-kiosk-slots.rules").read_text()
    check_udev_syntax(text)
    rules = doctor.parse_udev_rules(text)
    config = load_config(DEPLOY / "kiosk.example.toml")
    for slot in config.slots:
        n = slot.index + 1
        usb = [r for r in rules if r.assigns.get("SYMLINK") == f"particle-kiosk/slot{n}-usb"]
        tty = [r for r in rules if r.assigns.get("SYMLINK") == f"particle-kiosk/slot{n}-serial"]
        assert [r.matches["KERNEL"] for r in usb] == [slot.usb_port]
        assert [r.matches["KERNELS"] for r in tty] == [slot.usb_port]


def test_udevadm_verify_where_udev_has_it(installed):
    root, _ = installed
    if not shutil.which("udevadm") or subprocess.run(["udevadm", "verify", "--help"], capture_output=True).returncode:
        pytest.skip("this udev has no `udevadm verify` (systemd 254 and later have it)")
    rules = sorted((root / "etc/udev/rules.d").glob("*.rules"))
    proc = subprocess.run(["udevadm", "verify", *map(str, rules)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the example config and the wiring guide ----------------------------------------------------------------------


def wiring_pin_map() -> list[dict[str, str]]:
    """The rows of WIRING.md's pin map table."""
    text = (DEPLOY / "WIRING.md").read_text()
    lines = text.split("## Pin map", 1)[1].splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("|"))
    end = next(n for n in range(start, len(lines)) if not lines[n].startswith("|"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:end]]
    header, rows = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_example_config_passes_the_kiosks_validation():
    config = load_config(DEPLOY / "kiosk.example.toml")
    assert len(config.slots) == 2
    for slot in config.slots:
        # Released GPIO = device powered (WIRING.md rule 2): VBUS is on at the low (released) level.
        assert slot.vbus_pin is not None and slot.vbus_active_high is False
        assert slot.button_wiring == "transistor" and slot.button_active_high is True
        assert not {0, 1, 2, 3, 7, 8, 9, 10, 11, 14, 15} & set(slot.pins)  # ID EEPROM, I2C, SPI, UART stay free


def test_wiring_pin_map_matches_the_example_config():
    config = load_config(DEPLOY / "kiosk.example.toml")
    rows = wiring_pin_map()
    keys = {"RESET": "reset_pin", "MODE": "mode_pin", "VBUS switch": "vbus_pin", "EN": "en_pin"}
    leds = {"LED red": 0, "LED green": 1, "LED blue": 2}
    seen = set()
    for row in rows:
        slot = config.slots[int(row["Slot"].split()[0]) - 1]
        gpio = int(row["BCM GPIO"])
        want = getattr(slot, keys[row["Function"]]) if row["Function"] in keys else slot.led_pins[leds[row["Function"]]]
        assert gpio == want, row
        assert int(row["Header pin"]) == HEADER_PIN[gpio], row
        level = {"button": slot.button_active_high, "vbus": slot.vbus_active_high, "led": slot.led_active_high}
        kind = row["Active level (config)"].split("_", 1)[0].strip("`")
        assert row["Active level (config)"].endswith('"high"`') == level[kind], row
        seen.add((slot.index, gpio))
    assert seen == {(s.index, p) for s in config.slots for p in s.pins}  # every pin of the config is in the map


def test_the_comments_of_the_example_name_the_same_header_pins():
    text = (DEPLOY / "kiosk.example.toml").read_text()
    for match in re.finditer(r"^(\w+_pin) = (\d+)\s+# header pin (\d+)", text, re.M):
        assert HEADER_PIN[int(match.group(2))] == int(match.group(3)), match.group(0)
    parse_config(text)


def test_build_a_bench_covers_parts_wiring_install_and_first_boot():
    text = (DEPLOY / "BUILD-A-BENCH.md").read_text()
    assert text.startswith("## Build a bench")
    for section in ("### Parts", "### Wiring", "### Install", "### First boot"):
        assert section in text
    assert "sudo deploy/install.sh" in text and "kiosk doctor" in text


def test_the_bench_service_unit_owns_the_bench_with_a_group_only_socket_and_starts_before_the_touchscreen():
    bench = unit_entries((DEPLOY / "systemd/particle-kiosk-bench.service").read_text())
    exec_start = bench[("Service", "ExecStart")][0]
    assert exec_start == ("/opt/particle-kiosk/venv/bin/kiosk service --config /etc/particle-kiosk/kiosk.toml "
                          "--socket /run/particle-kiosk/bench.sock")
    from kiosk.service.wire import DEFAULT_SOCKET

    assert exec_start.endswith(DEFAULT_SOCKET)  # where every client looks by default
    assert bench[("Service", "User")] == ["kiosk"] and bench[("Service", "Group")] == ["kiosk"]
    groups = bench[("Service", "SupplementaryGroups")][0].split()
    assert {"plugdev", "dialout", "gpio"} <= set(groups)  # the groups the udev rules give the devices to
    rules = (DEPLOY / "udev/60-particle-kiosk.rules").read_text()
    assert {g for g in re.findall(r'GROUP="(\w+)"', rules)} <= set(groups)
    assert bench[("Service", "RuntimeDirectory")] == ["particle-kiosk"]
    assert bench[("Service", "RuntimeDirectoryMode")] == ["0750"]  # the socket's folder: the kiosk group only
    assert bench[("Service", "Restart")] == ["on-failure"]
    assert bench[("Service", "RestartPreventExitStatus")] == ["2"]  # a refusal (bad config, bench taken) stays
    assert bench[("Service", "EnvironmentFile")] == ["/etc/particle-kiosk/environment"]  # the same journal
    assert bench[("Unit", "Before")] == ["particle-kiosk.service"]
    touch = unit_entries((DEPLOY / "systemd/particle-kiosk.service").read_text())
    assert "particle-kiosk-bench.service" in touch[("Unit", "Wants")]
    assert "particle-kiosk-bench.service" in " ".join(touch[("Unit", "After")])


def test_the_bench_service_unit_passes_systemd_analyze_verify(installed, tmp_path):
    if not _have("systemd-analyze", "systemd"):
        pytest.skip("systemd-analyze is not installed and cannot be here (make tools installs it)")
    root, _ = installed
    text = (root / "etc/systemd/system/particle-kiosk-bench.service").read_text()
    # verify checks that ExecStart's program exists: this venv's kiosk stands in for the installed one
    unit = tmp_path / "particle-kiosk-bench.service"
    unit.write_text(text.replace("/opt/particle-kiosk/venv/bin/kiosk", str(Path(sys.executable).parent / "kiosk"))
                    .replace("EnvironmentFile=", "EnvironmentFile=-"))  # fmt: skip
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "particle-kiosk-bench.service" not in proc.stderr, proc.stderr
