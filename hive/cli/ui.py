"""``hive ui``: serve the read-only web dashboard of the hive under HIVE_HOME."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import typer
from pydantic import ValidationError

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, settings_or_exit
from hive.config import DashboardSettings

# The dashboard's app factory, named by an import string for uvicorn: hive.cli never imports hive.ui.
DASHBOARD_APP = "hive.ui.app:app_from_env"


def ui(
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        envvar="HIVE_UI_HOST",
        help="Address to listen on; anything but loopback exposes it.",
        show_envvar=True,
    ),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    allow_actions: bool = typer.Option(
        False,
        "--allow-actions",
        envvar="HIVE_UI_ALLOW_ACTIONS",
        help="Also serve the write routes: cancel a round, promote or roll back a core.",
        show_envvar=True,
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="HIVE_UI_TOKEN",
        help="A secret every action must carry (Bearer header or the pages' token field); "
        "required with --allow-actions on a non-loopback --host.",
        show_envvar=True,
    ),
) -> None:
    """Serve the dashboard: fleet, rounds timeline, knowledge heatmap, learnings and dead letters.

    Read-only unless --allow-actions: it serves GET requests only. The URL is printed on stderr once the
    server answers.
    """
    settings = settings_or_exit()
    try:
        DashboardSettings(host=host, allow_actions=allow_actions, token=token or "")
    except ValidationError as err:
        typer.echo("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors()), err=True)
        raise typer.Exit(EXIT_USAGE) from err
    try:
        # The dashboard's web stack is in the `hive` extra, and every `hive` command imports this module:
        # import it only when the dashboard runs.
        import uvicorn
    except ModuleNotFoundError as err:
        typer.echo(f"`hive ui` needs {err.name}: pip install 'hive-mind[hive]'", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    from streams.signing import KeyRingError

    # uvicorn builds the app from an import string, so the CLI never imports the dashboard (hive.ui); the
    # options reach the factory as HIVE_UI_* variables (hive.ui.app.DashboardSettings).
    config = uvicorn.Config(DASHBOARD_APP, factory=True, log_level="warning", access_log=False, lifespan="on")
    try:
        # Built here rather than in server.run, so that a bad setting is told with its own exit code.
        with _environment(dashboard_environment(host, allow_actions, token)):
            config.load()
    except ModuleNotFoundError as err:
        typer.echo(f"`hive ui` needs {err.name}: pip install 'hive-mind[hive]'", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except KeyRingError as err:
        # The fleet page checks heartbeats' signatures with the hive's keys: a bad key setting is a usage error.
        typer.echo(f"invalid HIVE_INGEST__* settings: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err
    try:
        sock = _listen(host, port)
    except OSError as err:
        typer.echo(f"cannot listen on {host}:{port}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    bound_port = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}/"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                mode = "read-only"
                if allow_actions:
                    mode = "actions enabled, token required" if token is not None else "actions enabled"
                typer.echo(f"hive ui: serving {settings.home.resolve()} at {url} ({mode})", err=True)

    server = Server(config)
    server.run(sockets=[sock])
    if not server.started:
        # uvicorn has logged why (the app's startup failed); say it in the exit status too.
        raise typer.Exit(EXIT_FAILURE)


def dashboard_environment(host: str, allow_actions: bool, token: str | None) -> dict[str, str]:
    """The HIVE_UI_* variables that tell the dashboard's factory how ``hive ui`` serves it."""
    return {
        "HIVE_UI_HOST": host,
        "HIVE_UI_ALLOW_ACTIONS": "true" if allow_actions else "false",
        "HIVE_UI_TOKEN": token or "",
    }


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block only, then the environment as it was."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket of our own, so that ``--port 0`` can print the port the system picked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
