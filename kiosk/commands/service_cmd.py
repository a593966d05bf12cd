"""`kiosk service`: the bench service, the one process that owns the bench (systemd's particle-kiosk-bench).

It opens the bench (the config's, or ``--simulate``'s), the journal and the library, and serves them on a Unix
socket (``--socket``, default /run/particle-kiosk/bench.sock, mode 0660) to the touchscreen, the browsers'
screens and the CLI; ``docs/api.md`` is its API. A second service on the same bench (the same journal) or the
same socket is refused. SIGTERM (systemctl stop) and Ctrl+C stop every run cleanly, buttons released, each run
journalled as stopped; a service that died instead leaves its runs to the next one, which marks them
interrupted.

    kiosk service --simulate app-crash@boron,frozen@p2 --speed 3 --socket /tmp/bench.sock
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from kiosk.commands.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, CommandError
from kiosk.service.wire import DEFAULT_SOCKET


def add_socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, default=None,
                        help=f"the bench service's socket (default {DEFAULT_SOCKET})")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    from kiosk.commands.tui_cmd import add_bench_args

    service = sub.add_parser("service", help="the bench service: owns the bench; the touchscreen and CLI use it")
    add_bench_args(service)
    add_socket_option(service)
    service.set_defaults(handler=cmd_service)


def engine_for(args: argparse.Namespace):
    """The engine for these arguments (nothing opened yet); CommandError for bad arguments."""
    from kiosk.commands.tui_cmd import bench_for
    from kiosk.service.engine import KioskBackend

    words, _cards, open_bench = bench_for(args)

    def open_library(bench):
        from kiosk.commands.flash_cmd import _library

        return _library(args, bench)

    def journal_path() -> Path:
        from kiosk.commands.recover_cmd import default_journal

        return default_journal()

    return KioskBackend(open_bench, open_library, args.journal or journal_path, lambda _item: None,
                        description=words, exclusive=True)  # fmt: skip


def remote_policy(args: argparse.Namespace):
    from kiosk.config import ConfigError, load_remote
    from kiosk.service.api import RemotePolicy

    try:
        remote = load_remote(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_REFUSED) from None
    return RemotePolicy(remote.control, remote.pin)


def cmd_service(args: argparse.Namespace) -> int:
    from kiosk.service.server import SocketInUse
    from kiosk.service.service import BenchService, BenchTaken
    from kiosk.tui.private import clean_up_after_parent, stop_with_parent

    parent = stop_with_parent()

    socket_path = Path(args.socket or DEFAULT_SOCKET)
    service = BenchService(engine_for(args), socket_path, policy=remote_policy(args))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            service.start()
        except (SocketInUse, BenchTaken) as exc:
            raise CommandError(str(exc), EXIT_REFUSED) from None
        except PermissionError as exc:
            raise CommandError(f"cannot create {socket_path}: {exc.strerror or exc} (its folder belongs to the "
                               "service's user; systemd makes /run/particle-kiosk)", EXIT_FAILED) from None  # fmt: skip
        except FileNotFoundError as exc:
            raise CommandError(f"the bench could not be opened: {exc}", EXIT_NOT_FOUND) from None
        except Exception as exc:
            raise CommandError(f"the bench could not be opened: {type(exc).__name__}: {exc}", EXIT_FAILED) from None
        interrupted = service.engine.interrupted
        if interrupted:
            print(f"kiosk service: runs {', '.join(map(str, interrupted))} were interrupted (the last service "
                  "stopped mid-run); marked so in the journal", file=sys.stderr)  # fmt: skip
        print(f"kiosk service: {service.engine.description}, serving on {socket_path}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
        print("kiosk service: stopping every run (buttons released)", file=sys.stderr, flush=True)
        service.close()
        clean_up_after_parent(parent, socket_path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK
