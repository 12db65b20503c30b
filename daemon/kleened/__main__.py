"""`kleened`: load the configuration, wire the services, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from . import __version__, logs
from .config import Config, ConfigError, Listener, load, parse_listener
from .core.services import Services

log = logging.getLogger("kleened")
SHUTDOWN_STOP_DEADLINE = 20.0  # seconds to stop every container before the listeners close


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kleened",
        description="The Kleene container daemon.",
        epilog="Other command: `kleened certs DIR` creates TLS certificates for remote access "
        "(see `kleened certs --help`).",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: %(default)s)", default=None)
    parser.add_argument("--version", action="version", version=f"kleened {__version__}")
    return parser.parse_args(argv)


async def watch_signals(shutdown: trio.Event, services: Services) -> None:
    """SIGTERM/SIGINT: shut down. SIGHUP: re-apply the network rules (after a host firewall reload)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("received SIGHUP, re-applying the network rules")
                try:
                    await services.networks.reapply()
                except Exception:
                    log.exception("could not re-apply the network rules")
                continue
            log.info("received %s, shutting down", signal.Signals(signum).name)
            shutdown.set()
            return


async def run_daemon(config: Config, listeners: list[Listener]) -> None:
    from .api.app import create_app
    from .server import serve_all
    from .wiring import open_services

    shutdown = trio.Event()  # a signal asked us to stop
    stop_serving = trio.Event()  # the listeners stop once the containers have stopped
    async with open_services(config) as services, trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals, shutdown, services)
        app = create_app(services, max_request_body=config.max_request_body)
        await nursery.start(
            lambda task_status: serve_all(
                app, listeners, stop_serving, max_ws_message=config.max_ws_message, task_status=task_status
            )
        )
        log.info("kleened %s ready", __version__)
        await services.start_on_startup()
        await shutdown.wait()
        # Stop the containers while the server still runs, so attached sessions end with their
        # close frame and exit code rather than a dropped connection. With live restore they
        # run on (`open_services` leaves them to the next daemon).
        if not config.live_restore:
            with trio.move_on_after(SHUTDOWN_STOP_DEADLINE):
                await services.containers.stop_all()
        stop_serving.set()
    log.info("kleened stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["certs"]:
        from .certs import main as certs_main

        return certs_main(argv[1:])
    args = parse_args(argv)
    try:
        config = load(args.config)
        listeners = [parse_listener(entry) for entry in config.api_listening_sockets]
    except ConfigError as exc:
        print(f"kleened: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    trio.run(run_daemon, config, listeners)
    return 0


if __name__ == "__main__":
    sys.exit(main())
