"""`kiosk scenarios|list|dfu|safe-mode|listen|reset|cold-boot|led`: one slot's device, gently first."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from firmware.platforms import UnknownPlatformError
from hw.clock import Cancelled
from hw.control import ControlChannel, ControlFailure, DeviceMode
from hw.gpio import LedUnavailable
from hw.hazard import HazardRefused
from hw.usb_identity import UsbAccessError
from kiosk import modes
from kiosk.bench import Bench, HardwareNotFound, Slot, hardware_bench, simulated_bench
from kiosk.commands.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, CommandError, emit
from kiosk.config import DEFAULT_CONFIG, ConfigError, load_config

MODE_COMMANDS: dict[str, tuple[Callable[[Slot], modes.ModeResult], str]] = {
    "dfu": (modes.enter_dfu, "put the device in DFU mode (control request, else MODE+RESET)"),
    "safe-mode": (modes.enter_safe_mode, "restart the device in safe mode (its app does not run)"),
    "listen": (modes.enter_listening, "put the device in listening mode"),
    "reset": (modes.reset, "restart the device (control request, else RESET)"),
    "cold-boot": (modes.cold_boot, "power off for the drain time, then on"),
}


def add_bench_options(parser: argparse.ArgumentParser, *, slot: bool = True) -> None:
    parser.add_argument("--simulate", metavar="SCENARIO[@PLATFORM][,...]", help="run on the simulated bench")
    parser.add_argument(
        "--speed", type=float, help="simulated device seconds per real second (default: as fast as possible)"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"bench config (default {DEFAULT_CONFIG})")
    if slot:
        parser.add_argument("--slot", type=int, default=1, help="which slot (1-based; default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    from kiosk.commands.through_service import add_socket_option

    add_socket_option(parser)


def register(sub: argparse._SubParsersAction) -> None:
    scen = sub.add_parser("scenarios", help="the simulator's scenarios and what they model")
    scen.add_argument("--json", action="store_true", help="print one JSON document")
    scen.set_defaults(handler=cmd_scenarios)

    lst = sub.add_parser("list", help="Particle devices on the bench: id, platform, mode, slot, Device OS")
    add_bench_options(lst, slot=False)
    lst.set_defaults(handler=cmd_list)

    for name, (_, text) in MODE_COMMANDS.items():
        p = sub.add_parser(name, help=text)
        add_bench_options(p)
        p.set_defaults(handler=cmd_mode, operation=name)

    insp = sub.add_parser(
        "inspect", help="the device's modules with PASS/FAIL per check (like particle serial inspect)"
    )
    add_bench_options(insp)
    insp.add_argument("--library", type=Path,
                      help="the firmware library to compare hashes with (default: the kiosk's; the demo one with "
                      "--simulate)")  # fmt: skip
    insp.set_defaults(handler=cmd_inspect)

    led = sub.add_parser("led", help="what the status LED shows (colour, pattern, SOS code and its meaning)")
    add_bench_options(led)
    led.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                     help="how long to watch (default: long enough for a whole SOS cycle)")  # fmt: skip
    led.set_defaults(handler=cmd_led)


@contextlib.contextmanager
def open_bench(args: argparse.Namespace) -> Iterator[Bench]:
    """The bench the arguments ask for; CommandError with exit 2 or 3 when it cannot be had. Every command that
    opens it has asked for a bench service first (kiosk.commands.through_service) and goes through one that
    answers, so this is the bench of a command that found none."""
    try:
        if args.simulate:
            bench = simulated_bench(args.simulate, args.speed)
        else:
            bench = hardware_bench(load_config(args.config))
    except (LookupError, UnknownPlatformError, ValueError) as exc:
        if isinstance(exc, ConfigError) and not Path(args.config).exists():
            raise CommandError(str(exc), EXIT_NOT_FOUND) from None
        raise CommandError(str(exc), EXIT_REFUSED) from None
    except HardwareNotFound as exc:
        raise CommandError(str(exc), EXIT_NOT_FOUND) from None
    try:
        with bench.clock.actor():
            yield bench
    finally:
        bench.close()


def _slot(bench: Bench, number: int) -> Slot:
    try:
        return bench.slot(number)
    except LookupError as exc:
        raise CommandError(str(exc), EXIT_REFUSED) from None


def cmd_scenarios(args: argparse.Namespace) -> int:
    from hw.sim.scenarios import SCENARIOS, refusals  # the catalogue only; nothing is simulated here

    if args.json:
        emit([{"name": s.name, "models": s.models, "fix": s.fix,
               "cannot_happen_on": {p: why.format(platform=p) for why, ps in refusals(s.name).items() for p in ps}}
              for s in SCENARIOS.values()])  # fmt: skip
        return EXIT_OK
    width = max(len(n) for n in SCENARIOS)
    for s in SCENARIOS.values():
        print(f"{s.name:{width}}  {s.models}\n{'':{width}}  -> {s.fix}")
        for why, platforms in refusals(s.name).items():
            print(f"{'':{width}}  not on {', '.join(platforms)}: {why.format(platform='device')}")
    print("\nUse with --simulate SCENARIO[@PLATFORM][,SCENARIO...] (platform default boron), e.g. app-crash@p2")
    return EXIT_OK


def _device_os(bench: Bench, slot: Slot, device: object) -> str | None:
    if device.mode != "normal":
        return None
    with contextlib.suppress(ControlFailure):
        return ControlChannel(device.usb_device, bench.clock, device.platform.quirks).system_version(timeout_s=3.0)
    return None


def device_row(bench: Bench, slot: Slot) -> dict:
    """One row of `kiosk list` (alone, and in the bench service for an idle slot): the slot's device as USB
    shows it (waited for as long as a device takes to enumerate) and its Device OS where it answers control
    request 30; UsbAccessError when USB cannot be opened."""
    device = modes.wait_for_device(slot, modes.FIND_TIMEOUT_S)
    if device is None:
        return {"slot": slot.index, "device_id": None, "platform": None, "mode": None, "device_os": None,
                "port": slot.usb_port}  # fmt: skip
    return {"slot": slot.index, "device_id": device.device_id, "platform": device.platform.name,
            "mode": device.mode, "device_os": _device_os(bench, slot, device), "port": device.port_path}  # fmt: skip


def cmd_list(args: argparse.Namespace) -> int:
    from kiosk.commands import through_service

    served = _served(args, "kiosk list", through_service.list_devices)
    if served is not None:
        rows = served["slots"]
    else:
        with open_bench(args) as bench:
            try:
                rows = [device_row(bench, slot) for slot in bench.slots]
            except UsbAccessError as exc:
                raise CommandError(str(exc), EXIT_NOT_FOUND) from None
    if args.json:
        emit(rows)
    else:
        for r in rows:
            if r.get("busy_with"):  # only through the service: a slot it runs something on is not asked
                known = f"{r['device_id']}  {r['platform'] or '?':9} {r['mode'] or 'not on USB':7} " \
                    if r["device_id"] else ""  # fmt: skip
                print(f"slot {r['slot']}: {known}busy with a {r['busy_with']}: the device is not asked now "
                      f"(port {r['port'] or 'any'})")  # fmt: skip
            elif r["device_id"] is None:
                print(f"slot {r['slot']}: no device (port {r['port'] or 'any'})")
            else:
                print(f"slot {r['slot']}: {r['device_id']}  {r['platform']:9} {r['mode']:7} "
                      f"Device OS {r['device_os'] or 'unknown'}  (port {r['port']})")  # fmt: skip
    return EXIT_OK if any(r["device_id"] for r in rows) else EXIT_NOT_FOUND


def _served(args: argparse.Namespace, what: str, ask: Callable) -> dict | None:
    """The command's answer from the bench service when one runs (it owns the bench); None: none runs."""
    from kiosk.commands import through_service

    client = through_service.connect(args)
    if client is None:
        return None
    with client:
        through_service.announce(client, what)
        return ask(args, client)


def cmd_mode(args: argparse.Namespace) -> int:
    from kiosk.commands import through_service

    served = _served(args, f"kiosk {args.operation}", through_service.mode)
    if served is not None:
        return _print_mode(args, served)
    operation, _ = MODE_COMMANDS[args.operation]
    with open_bench(args) as bench:
        slot = _slot(bench, args.slot)
        try:
            result = operation(slot)
        except modes.DeviceNotFound as exc:
            raise CommandError(str(exc), EXIT_NOT_FOUND) from None
        except UsbAccessError as exc:
            raise CommandError(str(exc), EXIT_NOT_FOUND) from None
        except HazardRefused as exc:
            raise CommandError(str(exc), EXIT_REFUSED) from None
        except Cancelled:
            raise CommandError("stopped; buttons released", EXIT_FAILED) from None
    return _print_mode(args, result.to_json())


def _print_mode(args: argparse.Namespace, result: dict) -> int:
    """A mode command's result (ModeResult JSON, from this bench or the service's) as the command prints it."""
    if args.json:
        emit({"slot": args.slot, "command": args.operation, **{k: v for k, v in result.items() if k != "slot"}})
    else:
        for attempt in result["attempts"]:
            print(f"  {attempt['method']}: {attempt['outcome']}")
        if result["ok"]:
            print(f"slot {args.slot}: {result['reached']} reached via {result['via']} ({result['elapsed_s']:.1f} s)")
        else:
            print(f"slot {args.slot}: {args.operation} FAILED: the device is in "
                  f"{result['reached'] or 'an unknown state'}")  # fmt: skip
    return EXIT_OK if result["ok"] else EXIT_FAILED


def cmd_led(args: argparse.Namespace) -> int:
    from hw.led_classifier import minimum_watch_s
    from kiosk.commands import through_service

    served = _served(args, "kiosk led", through_service.led)
    if served is not None:
        text = served.pop("text")
        served.pop("slot", None)
    else:
        with open_bench(args) as bench:
            slot = _slot(bench, args.slot)
            watch = args.watch if args.watch is not None else minimum_watch_s("sos")
            try:
                reading = slot.led.watch(watch)
            except LedUnavailable as exc:
                raise CommandError(str(exc), EXIT_NOT_FOUND) from None
        served, text = reading.to_json(), reading.describe()
    if args.json:
        emit({"slot": args.slot, **served})
    else:
        print(f"slot {args.slot}: {text}")
    return EXIT_OK


def _modules_by_serial(bench: Bench, slot: Slot, device: object) -> list:
    """The ``s`` table from the listening-mode console (for a device in listening mode)."""
    from hw.serial_console import ListeningConsole, SerialError, find_port

    port = find_port(device.device_id or "", slot.serial_lister)
    if port is None:
        raise CommandError("the device's serial port was not found", EXIT_FAILED)
    try:
        console = ListeningConsole(port, bench.clock)
        try:
            return [m.to_module_info() for m in console.system_info().modules]
        finally:
            console.close()
    except SerialError as exc:
        raise CommandError(f"the device did not report its modules over serial: {exc}", EXIT_FAILED) from None


def _inspect_library(args: argparse.Namespace, bench: Bench):
    """The library ``inspect`` compares hashes with: ``--library``, the demo one on a simulated bench, else
    the kiosk's own (an empty or missing one leaves every module "not in the library")."""
    from firmware.library import FirmwareLibrary
    from kiosk.commands.firmware_cmd import default_library

    if args.library:
        return FirmwareLibrary(args.library)
    if args.simulate:
        from kiosk.demo_library import demo_library  # synthetic releases for the simulated devices

        return demo_library({s.device.platform.name for s in bench.slots})
    return FirmwareLibrary(default_library())


def cmd_inspect(args: argparse.Namespace) -> int:
    """Control request 90 where the device answers it; the listening-mode ``s`` table where it listens.
    Each module's hash (where the device reports one) is compared with the library's."""
    from kiosk import inspect as inspection
    from kiosk.commands import through_service

    client = through_service.connect(args)
    if client is not None:
        with client:
            through_service.announce(client, "kiosk inspect")
            found = through_service.inspect(args, client)
        text = found.pop("text", "")
        if args.json:
            emit(found)
        else:
            print(text)
            for problem in found.get("library_problems") or ():
                print(f"library: {problem}")
        return EXIT_OK if found.get("ok") else EXIT_FAILED
    with open_bench(args) as bench:
        slot = _slot(bench, args.slot)
        try:
            device = modes.identify(slot)
        except (modes.DeviceNotFound, UsbAccessError) as exc:
            raise CommandError(str(exc), EXIT_NOT_FOUND) from None
        if device.mode != "normal":
            raise CommandError(
                f"the device is in {device.mode} mode: module info needs Device OS running (try `kiosk reset`)",
                EXIT_FAILED,
            )
        channel = ControlChannel(device.usb_device, bench.clock, device.platform.quirks)
        source = "control request 90"
        try:
            listening = channel.device_mode(timeout_s=3.0) == DeviceMode.LISTENING
        except ControlFailure:
            listening = False
        try:
            if listening:
                raise ControlFailure("listening: the console answers")
            infos = channel.module_info()
        except ControlFailure as exc:
            if not listening:
                raise CommandError(
                    f"the device did not report its modules ({exc}); put it in listening mode (`kiosk listen`) "
                    "to read them over serial",
                    EXIT_FAILED,
                ) from None
            source = "serial s (listening mode)"
            infos = _modules_by_serial(bench, slot, device)
        library = _inspect_library(args, bench)
        hashes = inspection.LibraryHashes(library, device.platform, {(i.function, i.index) for i in infos})
        modules = inspection.from_control(infos, hashes)
    ok = all(m.ok and m.matches_library for m in modules)
    if args.json:
        emit({"slot": args.slot, "device_id": device.device_id, "platform": device.platform.name,
              "source": source, "ok": ok, "library": str(library.root), "library_problems": hashes.problems,
              "modules": [m.to_json() for m in modules]})  # fmt: skip
    else:
        print(inspection.describe(device.platform, modules, source, str(library.root)))
        for problem in hashes.problems:
            print(f"library: {problem}")
    return EXIT_OK if ok else EXIT_FAILED
