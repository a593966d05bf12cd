"""Choices that read without colour: a ◉/○ mark on radio buttons and a ☑/☐ mark on a multiple-choice list.

Textual's own radio buttons and selection lists show the chosen state by colour alone; at a bench, in
glare or for a colour-blind technician, the mark must say it too.
"""

from __future__ import annotations

from textual.message import Message
from textual.widgets import OptionList, RadioButton, RadioSet
from textual.widgets.option_list import Option

CHOSEN, NOT_CHOSEN = "◉", "○"
TICKED, UNTICKED = "☑", "☐"


def marked_radio(words: str, value: bool, button_id: str) -> RadioButton:
    """A radio button whose label carries its state; ``words`` are kept in its name."""
    return RadioButton(f"{CHOSEN if value else NOT_CHOSEN} {words}", value=value, id=button_id, name=words)


def mark_radios(radio_set: RadioSet) -> None:
    """Refresh the ◉/○ marks after the choice changed."""
    for button in radio_set.query(RadioButton):
        button.label = f"{CHOSEN if button.value else NOT_CHOSEN} {button.name or ''}"


class ChoiceList(OptionList):
    """Tap (or Enter) ticks and unticks a line; ``selected`` is the ticked ids in list order."""

    class Changed(Message):
        """The ticked set changed."""

        def __init__(self, choice_list: ChoiceList) -> None:
            super().__init__()
            self.choice_list = choice_list

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._words: dict[str, str] = {}
        self._ticked: set[str] = set()

    @property
    def selected(self) -> list[str]:
        return [key for key in self._words if key in self._ticked]

    def set_choices(self, choices: list[tuple[str, str]], ticked: set[str] | None = None) -> None:
        """Replace the lines: (words, id) pairs; ``ticked`` ids start ticked."""
        self._words = {key: words for words, key in choices}
        self._ticked = {key for key in (ticked or set()) if key in self._words}
        self.clear_options()
        self.add_options([Option(self._prompt(key), id=key) for key in self._words])

    def toggle(self, key: str) -> None:
        if key not in self._words:
            return
        self._ticked ^= {key}
        self.replace_option_prompt(key, self._prompt(key))
        self.post_message(self.Changed(self))

    def _prompt(self, key: str) -> str:
        return f"{TICKED if key in self._ticked else UNTICKED} {self._words[key]}"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.toggle(event.option.id)
