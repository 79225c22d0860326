"""`make dashboard` (`python -m sweeper.results.dashboard [overrides]`): the sweep's study storage served by
optuna-dashboard on 127.0.0.1:sweep.dashboard_port, the same overrides picking the same study."""
import sys

from trainers.settings import ConfigError


def storage_to_serve(argv: list[str]):
    from sweeper.settings import sweep_settings
    from sweeper.study import check_study_exists

    s = sweep_settings(argv, check_values=False)
    check_study_exists(s)
    return s


def port_taken(port: int) -> str | None:
    """Why the dashboard could not listen on 127.0.0.1:port, or None: asked before the server starts,
    which would print its address and then a traceback."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def main(argv: list[str]) -> int:
    try:
        s = storage_to_serve(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    port = s.dashboard_port
    taken = port_taken(port)
    if taken:
        print(f"error: sweep.dashboard_port={port}: 127.0.0.1:{port} is taken ({taken}); choose another, e.g. "
              f"make dashboard ARGS=\"... sweep.dashboard_port={port + 1}\"", file=sys.stderr)
        return 2
    from optuna_dashboard import run_server

    print(f"optuna-dashboard: http://127.0.0.1:{port}/ serving {s.storage_shown} (study {s.study_name!r}); "
          "Ctrl-C stops it", flush=True)
    run_server(s.storage, host="127.0.0.1", port=port)
    return 0


def cli() -> None:
    """The qlora-dashboard command of an installed package."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
