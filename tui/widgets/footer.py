"""The key bar at the bottom of every screen: Textual's Footer, rebuilt only when its keys change."""

from __future__ import annotations

from typing import Optional

from textual.screen import Screen
from textual.widgets import Footer


class StableFooter(Footer):
    """Textual's Footer starts empty, then recomposes all its keys on every focus change. A screen
    appearing moves the focus two or three times without changing the keys shown, and each
    rebuild costs ~20 ms on a small CPU: a fifth of the first paint. This one shows the screen's
    keys from its first compose and rebuilds only when the shown keys differ."""

    _shown: Optional[tuple] = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_reactive(Footer._bindings_ready, True)

    def _keys(self, screen: Screen) -> tuple:
        return tuple(
            (key, binding.description, binding.action, enabled, tooltip, binding.group)
            for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items()
            if binding.show or key == self.app.COMMAND_PALETTE_BINDING
        )

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen and self._keys(screen) == self._shown:
            return
        super().bindings_changed(screen)

    def compose(self):
        self._shown = self._keys(self.screen)
        yield from super().compose()
