"""The Library and History screens at 80x24 (the 7" display), driven by touch alone (Pilot clicks, wheel and
scrollbar drags): the tables use their room, every column is on screen, every quarantine reason can be
brought into view, History's All button is on screen and works, and a part of a device id filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual import events
from textual.geometry import Region
from textual.widgets import DataTable, Input, Static

from firmware.builder import build_module
from firmware.platforms import Function
from kiosk.journal import Journal
from kiosk.tui.screens.history import HistoryScreen, parse_filter
from kiosk.tui.screens.library import LibraryScreen
from kiosk.tui.screens.report import ReportScreen
from tests.tui.conftest import ready, wait_until

SIZE = (80, 24)
LONG_APP = "acme-cold-chain-tracker-firmware-production-build"
BAD_FILES = 8
#: Devices in the journal: two share the first six digits, as two cards on a bench can.
ADFF_A, ADFF_B = "adff26000000000011aa809e", "adff26999999999922bb0001"
OTHER = "e00fce68aabbccddeeff0011"


def bad_files(folder: Path) -> Path:
    """A stick with a long-named app and BAD_FILES damaged system parts (each quarantined with its reason)."""
    stick = folder / "media" / "STICK"
    stick.mkdir(parents=True)
    for n in range(BAD_FILES):
        data = bytearray(build_module(platform_id=13, function=Function.SYSTEM_PART, index=1, version=6101 + n))
        data[100 + n] ^= 0xFF  # a damaged download: its CRC fails
        (stick / f"boron-system-part1-damaged-download-number-{n}@6.1.{n}.bin").write_bytes(bytes(data))
    (stick / f"{LONG_APP}.bin").write_bytes(build_module(platform_id=13, function=Function.USER_PART, index=2,
                                                         version=6))  # fmt: skip
    return stick


def journal(path: Path, extra: int = 0) -> dict[str, list[int]]:
    """Runs of three devices and one with no id (plus ``extra`` more of OTHER); run ids by device."""
    times = iter(datetime(2025, 3, 14, 9, 26, tzinfo=UTC) + timedelta(minutes=n) for n in range(10_000))
    j = Journal(path, now=lambda: next(times))
    ids: dict[str, list[int]] = {}
    plan = [(1, ADFF_A, "boron"), (2, OTHER, "photon"), (1, ADFF_A, "boron"), (3, ADFF_B, "argon"),
            (4, None, None), *[(2, OTHER, "photon")] * extra]  # fmt: skip
    for slot, device, platform in plan:
        run = j.start_run(slot, device, platform, "app-crash")
        j.finish_run(run, "recovered" if device else "damaged-hardware", "safe-mode" if device else None,
                     "words", 10.0, 9.0)  # fmt: skip
        ids.setdefault(device or "", []).append(run)
    j.close()
    return ids


def inside(outer: Region, inner: Region) -> bool:
    return inner.area > 0 and outer.contains_region(inner)


def columns_fit(table: DataTable) -> None:
    """Every column's header starts and ends within the table's visible width: no column needs scrolling."""
    right = 0
    for column in table.ordered_columns:
        right += column.get_render_width(table)
        assert right <= table.scrollable_content_region.width, f"column {column.label} ends off the table"
    assert table.max_scroll_x == 0
    assert inside(table.screen.region, table.region)


async def open_library(pilot, app, folder: Path) -> LibraryScreen:
    await ready(pilot)
    app.test_engine.library.import_path(bad_files(folder))
    await pilot.press("l")
    await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.query(".reason"), 20,
                     "the library with its quarantine")  # fmt: skip
    await app.workers.wait_for_complete()
    await pilot.pause()
    return app.screen


async def test_the_library_table_uses_its_room_and_every_column_is_on_screen(kiosk, tmp_path):
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_library(pilot, app, tmp_path)
        table = screen.query_one("#entries", DataTable)
        assert table.row_count == 6  # the demo release's five files and the long-named app
        assert table.region.height - 1 >= 7, f"the table shows only {table.region.height - 1} rows"
        columns_fit(table)
        cells = [str(c) for c in table.get_row_at(0)]
        assert cells[2] != LONG_APP and "…" in cells[2], "the long name was not cut"
        assert len(cells[4]) == 8  # the SHA-256's first digits


async def test_a_tap_on_a_library_row_tells_all_about_its_file(kiosk, tmp_path):
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_library(pilot, app, tmp_path)
        table = screen.query_one("#entries", DataTable)
        entry = next(e for e in app.test_engine.library.entries() if e.name == LONG_APP)
        row = table.get_row_index(entry.path)
        table.move_cursor(row=table.row_count - 1 if row == 0 else 0)
        await pilot.pause()
        await pilot.click("#entries", offset=(4, 1 + row))  # one tap, on a row that was not highlighted
        await pilot.pause()
        words = str(screen.query_one("#library-message", Static).render())
        assert LONG_APP in words and entry.sha256 in words


async def test_every_quarantine_reason_can_be_brought_into_view_by_wheel_and_by_dragging(kiosk, tmp_path):
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_library(pilot, app, tmp_path)
        box = screen.query_one("#quarantine")
        reasons = list(box.query(".reason"))
        assert len(reasons) == BAD_FILES
        bar = screen.query_one(".bar")
        assert inside(screen.region, box.region) and box.region.bottom <= bar.region.y
        assert box.region.height >= 4
        assert not inside(box.region, reasons[-1].region), "all reasons fit: the test would prove nothing"
        for reason in reasons:
            box.scroll_to_widget(reason, animate=False, top=True)
            await pilot.pause()
            assert inside(box.region, reason.region), f"{reason.render()} cannot be brought into view"
            assert "CRC" in str(reason.render())
        # By touch: the wheel (a swipe in most touch terminals) scrolls the list ...
        box.scroll_home(animate=False)
        await pilot.pause()
        for _ in range(60):
            await pilot._post_mouse_events([events.MouseScrollDown], "#quarantine", offset=(10, 1))
        await pilot.pause()
        assert box.scroll_y == box.max_scroll_y > 0
        assert inside(box.region, reasons[-1].region)
        # ... and a finger can drag its scrollbar, which is wide enough to hit.
        box.scroll_home(animate=False)
        await pilot.pause()
        thumb_x = box.region.width - 2
        assert box.styles.scrollbar_size_vertical >= 3
        await pilot.mouse_down("#quarantine", offset=(thumb_x, 0))
        await pilot.hover("#quarantine", offset=(thumb_x, box.region.height - 1))
        await pilot.mouse_up("#quarantine", offset=(thumb_x, box.region.height - 1))
        await pilot.pause()
        assert box.scroll_y > box.max_scroll_y / 2, "dragging the scrollbar did not scroll the list"


async def test_no_quarantine_leaves_the_table_the_room(kiosk):
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), 10)
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert "No file is quarantined" in str(screen.query_one("#quarantine-title", Static).render())
        assert screen.query_one("#quarantine").display is False
        assert screen.query_one("#entries").region.height >= 14


async def test_an_empty_library_says_how_to_fill_it(kiosk, tmp_path):
    from firmware.library import FirmwareLibrary

    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.test_engine.library = FirmwareLibrary(tmp_path / "empty")
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), 10)
        await app.workers.wait_for_complete()
        await pilot.pause()
        words = str(app.screen.query_one("#library-message", Static).render())
        assert "is empty" in words and "Import" in words and "USB stick" in words


async def open_history(pilot, app) -> HistoryScreen:
    await ready(pilot)
    await pilot.press("h")
    await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.query_one("#runs").row_count,
                     20, "the history")  # fmt: skip
    await app.workers.wait_for_complete()
    await pilot.pause()
    return app.screen


def shown_runs(screen) -> set[int]:
    table = screen.query_one("#runs", DataTable)
    return {int(row.key.value) for row in table.ordered_rows}


def message(screen) -> str:
    return str(screen.query_one("#history-message", Static).render())


@pytest.mark.parametrize("extra", [0, 40], ids=["few-runs", "a-scrolling-table"])
async def test_the_history_table_fits_80_columns_and_all_is_on_screen(kiosk, tmp_path, extra):
    journal(tmp_path / "journal.sqlite", extra)
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 5 + extra
        assert table.region.height - 1 >= 14
        columns_fit(table)
        labels = [str(c.label) for c in table.ordered_columns]
        assert labels[:6] == ["Started", "Slot", "Device", "Platform", "Result", "Fixed by"]
        assert "all in 2025 (times UTC)" in message(screen)
        field, everything = screen.query_one("#device-filter", Input), screen.query_one("#all")
        assert inside(screen.region, everything.region) and inside(screen.region, field.region)
        assert field.region.right <= everything.region.x and field.region.width >= 40


async def test_the_history_filter_takes_a_part_of_an_id_and_all_brings_every_run_back(kiosk, tmp_path):
    ids = journal(tmp_path / "journal.sqlite")
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        every = shown_runs(screen)
        assert len(every) == 5

        async def filter_by(text: str) -> None:
            screen.query_one("#device-filter", Input).value = ""
            await pilot.click("#device-filter")
            await pilot.press(*text, "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()

        await filter_by("ADFF26")  # as read off two cards; any case
        assert shown_runs(screen) == set(ids[ADFF_A] + ids[ADFF_B])
        assert message(screen).startswith("3 runs of 2 devices matching adff26")
        await filter_by("adff26...809e")  # the card's own form, typed
        assert shown_runs(screen) == set(ids[ADFF_A]), message(screen)
        assert message(screen).startswith(f"2 runs of device {ADFF_A} (matching adff26…809e)")
        screen.query_one("#device-filter", Input).value = "adff26…809e"  # pasted, with the card's own ellipsis
        await pilot.click("#filter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert shown_runs(screen) == set(ids[ADFF_A]), message(screen)
        await filter_by("22bb")  # a part from the middle
        assert shown_runs(screen) == set(ids[ADFF_B])
        await filter_by(OTHER)  # a whole id (typed or scanned)
        assert shown_runs(screen) == set(ids[OTHER]) and message(screen).startswith(f"1 run of device {OTHER}")
        await filter_by("beef")
        assert shown_runs(screen) == set() and "No runs of a device matching beef" in message(screen)
        await filter_by("slot 3")
        assert "is not a device id" in message(screen) and "24 hex digits" in message(screen)
        assert shown_runs(screen) == set()  # a refused filter leaves the table as it was
        await pilot.click("#all")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert shown_runs(screen) == every and screen.query_one("#device-filter", Input).value == ""
        assert message(screen).startswith("5 runs, newest first")


async def test_one_tap_on_a_run_opens_its_report(kiosk, tmp_path):
    ids = journal(tmp_path / "journal.sqlite")
    app = kiosk("healthy@boron")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        table = screen.query_one("#runs", DataTable)
        row = table.get_row_index(str(ids[OTHER][0]))
        assert row != table.cursor_row
        await pilot.click("#runs", offset=(4, 1 + row))
        await wait_until(pilot, lambda: isinstance(app.screen, ReportScreen), 10, "the report")
        assert app.screen.run_id == ids[OTHER][0]


@pytest.mark.parametrize(
    ("typed", "words"),
    [("hello", "is not a device id nor part of one"), ("adff26-809e", "24 hex digits"),
     ("e00fce68aabbccddeeff00112233", "too long"), ("…", "is not a device id")],
)  # fmt: skip
def test_the_filter_refuses_what_is_no_part_of_an_id_saying_what_one_looks_like(typed, words):
    with pytest.raises(ValueError, match=words):
        parse_filter(typed)


def test_the_filter_reads_ids_as_technicians_type_them():
    assert parse_filter(" E00FCE68 AABBCCDDEEFF0011 ").exact == OTHER  # a scanner's or a careful hand's
    assert parse_filter("adff26...809e").matches(ADFF_A) and not parse_filter("adff26...809e").matches(ADFF_B)
    assert parse_filter("809e").matches(ADFF_A) and not parse_filter("809e").matches(None)
    assert parse_filter("").everything
