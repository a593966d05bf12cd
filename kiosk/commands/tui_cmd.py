"""`kiosk tui` (also bare `kiosk`): the touchscreen kiosk; `kiosk serve`: the same app in a web browser.

Both are clients of the bench service (``kiosk service``, docs/api.md), which owns the bench: on a real bench
the touchscreen connects to its socket (``--socket``, default /run/particle-kiosk/bench.sock) and says on
screen how to start the service while none answers. ``kiosk tui --simulate SCENARIO,...`` starts a private
service on that simulated bench (paced at real time unless ``--speed`` says otherwise) and stops it on exit,
so the whole product can be tried on a laptop with one command. ``kiosk serve`` gives every browser its own
``kiosk tui --remote`` connected to the same service: all see the same bench, and who may press is the
config's ``[remote] control``.

Start-up is kept short: only what the first screen needs is imported before it shows (Textual, the cards,
the client); the cards are there from the first frame, from the arguments (or the config), and come alive
when the service answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kiosk.commands.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, CommandError

SIMULATED_SPEED = 1.0  # device seconds per real second on a simulated bench: a person can follow it
#: The cards the touchscreen has room for on a simulated bench (80x24: two rows of two); kiosk.bench allows more
#: for the CLI and the benchmarks (not imported from there: kiosk.bench imports every driver).
MAX_SIM_SLOTS = 4


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    from kiosk.config import DEFAULT_CONFIG

    parser.add_argument("--simulate", metavar="SCENARIO[@PLATFORM][,...]",
                        help="the simulated bench, one scenario per slot (see `kiosk scenarios`)")  # fmt: skip
    parser.add_argument("--speed", type=float,
                        help=f"simulated device seconds per real second (default {SIMULATED_SPEED:g})")  # fmt: skip
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"bench config (default {DEFAULT_CONFIG})")
    parser.add_argument("--journal", type=Path, help="the journal (default: the kiosk's)")
    parser.add_argument("--library", type=Path,
                        help="the firmware library (default: the kiosk's; a synthetic demo library with --simulate)")


def register(sub: argparse._SubParsersAction) -> None:
    tui = sub.add_parser("tui", help="the touchscreen kiosk (what bare `kiosk` opens)")
    add_bench_args(tui)
    add_client_args(tui)
    tui.add_argument("--remote", action="store_true",
                     help="a remote screen: it may press only as the config's [remote] control allows")  # fmt: skip
    tui.set_defaults(handler=cmd_tui)

    serve = sub.add_parser("serve", help="serve the touchscreen kiosk to a web browser (a supervisor's screen)")
    add_bench_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    add_client_args(serve)
    serve.set_defaults(handler=cmd_serve)


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, default=None,
                        help="the bench service's socket (default: /run/particle-kiosk/bench.sock; with --simulate a "
                             "private service on a temporary one)")  # fmt: skip


def tui_defaults() -> argparse.Namespace:
    """The arguments bare `kiosk` runs the TUI with: the configured bench."""
    from kiosk.config import DEFAULT_CONFIG

    return argparse.Namespace(simulate=None, speed=None, config=DEFAULT_CONFIG, journal=None, library=None,
                              socket=None, remote=False)  # fmt: skip


def bench_for(args: argparse.Namespace):
    """(words for the title, a card per slot for the first frame, how to open the bench) for these arguments;
    CommandError for bad ones, before any screen or socket. Cheap: nothing of the bench is imported."""
    from kiosk.service.slots import SlotState

    if args.speed is not None and args.speed <= 0:
        raise CommandError("--speed must be positive (device seconds per real second)", EXIT_REFUSED)
    if args.simulate:
        from firmware.platforms import UnknownPlatformError, platform_by_name
        from hw.sim.scenarios import parse_simulate

        try:
            wanted = parse_simulate(args.simulate)
        except (LookupError, UnknownPlatformError, ValueError) as exc:
            raise CommandError(str(exc), EXIT_REFUSED) from None
        if len(wanted) > MAX_SIM_SLOTS:
            raise CommandError(f"a simulated bench has at most {MAX_SIM_SLOTS} slots, not {len(wanted)}")
        speed = args.speed if args.speed is not None else SIMULATED_SPEED
        words = f"simulated bench ({speed:g}x)"
        # as kiosk.bench.simulated_bench makes them: "slot N", the device's platform, an LED sensor on each
        slots = [SlotState(n, f"slot {n}", platform_hint=platform_by_name(platform).name)
                 for n, (_, platform) in enumerate(wanted, start=1)]  # fmt: skip

        def open_bench():
            from kiosk.bench import simulated_bench

            return simulated_bench(args.simulate, speed)
    else:
        from kiosk.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            status = EXIT_NOT_FOUND if not Path(args.config).exists() else EXIT_REFUSED
            hint = "" if Path(args.config).exists() else "; to try it without hardware: kiosk tui --simulate app-crash"
            raise CommandError(f"{exc}{hint}", status) from None
        words = f"bench {config.source}"
        slots = [SlotState(cfg.index + 1, cfg.name, led_sensor=cfg.led_pins is not None) for cfg in config.slots]

        def open_bench():
            from kiosk.bench import hardware_bench

            return hardware_bench(config)

    return words, slots, open_bench


def bench_args(args: argparse.Namespace) -> list[str]:
    """The bench options again, as arguments (for a private service, or each browser's `kiosk tui`)."""
    out = ["--config", str(args.config)]
    for name in ("simulate", "speed", "journal", "library"):
        value = getattr(args, name, None)
        if value is not None:
            out += [f"--{name}", str(value)]
    return out


def build_app(args: argparse.Namespace, *, live: bool = True):
    """The app and its link to the bench service; bad arguments raise CommandError before any screen.

    Nothing slow happens here: with --simulate and no --socket a private ``kiosk service`` process starts
    (it opens the bench while the first frame is drawn); the link connects once that frame is up.
    """
    from kiosk.service.wire import DEFAULT_SOCKET
    from kiosk.tui.app import KioskApp
    from kiosk.tui.link import ServiceLink
    from kiosk.tui.settings import TuiSettings

    socket_path = getattr(args, "socket", None)
    if socket_path is not None and not args.simulate and not Path(args.config).exists():
        # a client of a named service needs no bench config: the service has one, and its slots come with the
        # first answer ("Opening the bench…" until then)
        words, slots = "", []
    else:
        words, slots, _open_bench = bench_for(args)
    private = None
    if socket_path is None and args.simulate:
        from kiosk.tui.private import PrivateService

        private = PrivateService(bench_args(args))
        socket_path = private.socket_path
    remote = bool(getattr(args, "remote", False))
    link = ServiceLink(Path(socket_path or DEFAULT_SOCKET), role="remote" if remote else "touchscreen",
                       client="kiosk serve screen" if remote else "kiosk tui", private=private)  # fmt: skip
    app = KioskApp(link, live=live, settings=TuiSettings.load(), bench_words=words, slots=slots,
                   demo=bool(args.simulate))  # fmt: skip
    return app, link


def tui_log_path() -> Path:
    """Where the touchscreen logs what went wrong (a fault in a screen, with its traceback)."""
    state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state_home / "particle-kiosk" / "tui.log"


def _log_to_file(path: Path) -> None:
    """The kiosk's warnings and errors to ``path`` (1 MiB, 3 old files kept): the terminal is the screen."""
    import logging
    from logging.handlers import RotatingFileHandler

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(path, maxBytes=1 << 20, backupCount=3, encoding="utf-8")
    except OSError as exc:
        print(f"kiosk: cannot write the log {path} ({exc.strerror or exc}); faults are shown on screen only",
              file=sys.stderr)  # fmt: skip
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    for name in ("kiosk", "hw"):
        logging.getLogger(name).addHandler(handler)


def cmd_tui(args: argparse.Namespace) -> int:
    app, link = build_app(args)
    _log_to_file(tui_log_path())
    try:
        app.run()
    finally:
        link.close()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """textual-serve runs `kiosk tui --remote` for each browser that connects, all on one bench service (with
    --simulate and no --socket, a private one started here for them all)."""
    try:
        from textual_serve.server import Server
    except ImportError:
        raise CommandError("kiosk serve needs textual-serve: pip install textual-serve", EXIT_NOT_FOUND) from None
    import shlex

    from kiosk.service.wire import DEFAULT_SOCKET

    bench_for(args)  # the same checks as `kiosk tui`, before anything listens
    private = None
    socket_path = args.socket
    if socket_path is None and args.simulate:
        from kiosk.tui.private import PrivateService

        private = PrivateService(bench_args(args))
        socket_path = private.socket_path
    socket_path = Path(socket_path or DEFAULT_SOCKET)
    command = shlex.join([sys.executable, "-m", "kiosk.cli", "tui", *bench_args(args), "--socket", str(socket_path),
                          "--remote"])  # fmt: skip
    print(f"serving the kiosk on http://{args.host}:{args.port} (Ctrl+C stops it); every browser's screen uses "
          f"the bench service at {socket_path}", file=sys.stderr)  # fmt: skip
    try:
        serve_server(Server, command, args.host, args.port).serve()
    finally:
        if private is not None:
            private.close()
    return EXIT_OK


def serve_server(server_class, command: str, host: str, port: int):
    """textual-serve's Server with the kiosk's own page, which works offline.

    The stock page loads its font from an internet font service; ours (kiosk/serve_page/app_index.html)
    takes everything from the kiosk: textual-serve's own static files (script, stylesheet, the font files
    it ships), by relative URLs, and the websocket on the host the browser reached.
    """
    from kiosk.serve_page import TEMPLATES

    return server_class(command, host=host, port=port, title="Particle bench kiosk", templates_path=TEMPLATES)
