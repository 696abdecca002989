"""Command palette entries (ctrl+p): go to any step, save, apply a preset."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.session.draft import STEP_TITLES, STEPS


class WizardCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        commands: list[tuple[str, object, str]] = [
            (f"Go to step {i + 1}: {STEP_TITLES[step]}", partial(app.goto, step, False), f"Show the {STEP_TITLES[step].lower()} step")
            for i, step in enumerate(STEPS)
        ]
        commands.append(("Save the session in progress", app.action_save, "Write it to disk now (it is also saved after every step)"))
        try:
            from engine.session.edits import load_presets

            for name, preset in load_presets().items():
                commands.append((f"Apply preset: {preset.title}", partial(app.apply_preset, name), preset.description))
        except Exception:  # a broken presets file is reported on the hyperparameters step
            pass
        return commands

    async def discover(self) -> Hits:
        for text, callback, help_text in self._commands():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
