"""`lora-tui serve`: the same wizard in a browser, through textual-serve.

Every browser tab that connects starts its own `lora-tui` process (textual-serve runs the command
once per connection and relays its terminal over a websocket). The server binds to 127.0.0.1 by
default: reach it through an SSH tunnel (`ssh -L 8000:localhost:8000 box`). There is no password,
so binding anywhere else hands the wizard, and the training it starts, to whoever reaches the port.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import socket
import sys

from engine.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
WIZARD_GRACE_S = 3.0  # a tab's wizard gets this long to quit when the server stops


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-tui serve",
        description="Serve the wizard in a browser (textual-serve). Bound to localhost by default; "
        "from another machine use an SSH tunnel: ssh -L 8000:localhost:8000 box.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}; anything else is reachable by others, with no password)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--public-url", metavar="URL",
                        help="the address the browser uses, when it differs from http://HOST:PORT "
                        "(a provider's web proxy, e.g. https://abc-8000.proxy.example.net)")
    from tui.cli import add_wizard_arguments

    add_wizard_arguments(parser.add_argument_group("the wizard in each browser tab"))
    return parser


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only (127.0.0.1, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def exposure_warning(host: str, port: int) -> str | None:
    """One plain sentence for a server that others can reach; None on localhost."""
    if is_loopback(host):
        return None
    return (f"lora-tui serve: listening on {host}:{port} with no password: anyone who can reach this port controls "
            f"training on this machine, including the shell command a session runs when it finishes.")


def wizard_command(args: argparse.Namespace) -> str:
    """The shell command textual-serve runs for each browser tab: this interpreter's `lora-tui`."""
    argv = [sys.executable, "-m", "tui.cli"]
    for name in ("session", "model", "dataset", "gpu", "vram"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name}", os.path.abspath(value) if name in ("session", "dataset") else str(value)]
    return shlex.join(argv)


def serve_command(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: give a port between 1 and 65535, such as 8000.")
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise UserError("lora-tui serve needs textual-serve: pip install textual-serve.") from exc

    from engine.paths import PROJECT_ROOT

    # As for the engine's workers: from a checkout, the tab's `python -m tui.cli` imports this copy.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    warning = exposure_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)

    class WizardServer(Server):
        def request_exit(self) -> None:
            """Ctrl+C or SIGTERM: textual-serve waits for every open tab's wizard to quit, and a wizard
            busy in a worker (reading a model) takes its time; ask them now, and insist after a grace."""
            import asyncio

            wizards = _wizards()
            _signal(wizards, "terminate")
            asyncio.get_event_loop().call_later(WIZARD_GRACE_S, _signal, wizards, "kill")
            super().request_exit()

    server = WizardServer(wizard_command(args), host=args.host, port=args.port, title="lora-tui", public_url=args.public_url)
    try:
        server.serve()
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another --port or --host.") from exc
    finally:
        end_wizards()
    return 0


def _wizards() -> list:
    """The processes textual-serve started for the tabs (`sh -c ...` and the wizard under it).

    Only this session's: a training run started from a tab is a session of its own and goes on,
    as it does when a terminal closes.
    """
    import psutil

    here = os.getsid(0)
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if os.getsid(child.pid) == here:
                found.append(child)
        except OSError:
            pass  # ended meanwhile
    return found


def _signal(processes: list, how: str) -> None:
    """`terminate` (SIGTERM: the wizard quits as from ctrl+q; its draft is saved as it goes) or `kill`."""
    import psutil

    for process in processes:
        try:
            if process.is_running():
                getattr(process, how)()
        except psutil.Error:
            pass  # ended meanwhile


def end_wizards(timeout: float = WIZARD_GRACE_S) -> None:
    """Stop the wizards of tabs still open when the server has stopped."""
    import psutil

    wizards = _wizards()
    _signal(wizards, "terminate")
    _, alive = psutil.wait_procs(wizards, timeout=timeout)
    _signal(alive, "kill")
