"""``hive ui``: serve the read-only web dashboard of the hive under HIVE_HOME."""

from __future__ import annotations

import socket

import typer

from hive.cli.common import EXIT_FAILURE, settings_or_exit

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback exposes it."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    allow_actions: bool = typer.Option(
        False, "--allow-actions", help="Also serve the write routes: cancel a round, promote or roll back a core."
    ),
) -> None:
    """Serve the dashboard: fleet, rounds timeline, knowledge heatmap, learnings and dead letters.

    Read-only unless --allow-actions: it serves GET requests only. The URL is printed on stderr once the
    server answers.
    """
    settings = settings_or_exit()
    try:
        # The dashboard's web stack is in the `hive` extra, and every `hive` command imports this module:
        # import it only when the dashboard runs.
        import uvicorn

        from hive.ui.app import create_app
    except ModuleNotFoundError as err:
        typer.echo(f"`hive ui` needs {err.name}: pip install 'hive-mind[hive]'", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    try:
        sock = _listen(host, port)
    except OSError as err:
        typer.echo(f"cannot listen on {host}:{port}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    bound_port = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}/"
    # On loopback, only loopback names may reach it: a web page cannot rebind its own DNS name to 127.0.0.1
    # and read the dashboard. On any other address the operator chose who may connect.
    allowed = [*LOOPBACK_NAMES] if host in LOOPBACK_NAMES else None
    if allow_actions and allowed is None:
        typer.echo(f"warning: --allow-actions on {host}: anyone who can reach it can release cores", err=True)
    app = create_app(settings, allowed_hosts=allowed, allow_actions=allow_actions)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                mode = "actions enabled" if allow_actions else "read-only"
                typer.echo(f"hive ui: serving {settings.home.resolve()} at {url} ({mode})", err=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = Server(config)
    server.run(sockets=[sock])
    if not server.started:
        # uvicorn has logged why (the app's startup failed); say it in the exit status too.
        raise typer.Exit(EXIT_FAILURE)


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
