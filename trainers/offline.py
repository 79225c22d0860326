"""A model hub that cannot be reached, found by one DNS lookup and one TCP connection when a
command starts, puts the process (and the trial processes it starts, which inherit its
environment) in HF_HUB_OFFLINE mode: local folders and the Hugging Face cache then answer at once,
where huggingface_hub would retry each load for ~25 s, in the sweep's checks and again in every trial."""
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

HUB = "https://huggingface.co"  # huggingface_hub's endpoint unless HF_ENDPOINT names another


def hub_unreachable(timeout_s: float = 3.0, connect_s: float = 5.0) -> str | None:
    """'<host>: <why>' when the hub's host name does not resolve, or resolves but refuses or drops a
    connection (a firewall: huggingface_hub would wait out its timeouts and retries at every load),
    else None. A resolver too slow to answer within timeout_s leaves the libraries to try."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or HUB)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    found: dict[str, str] = {}

    def look_up():
        try:
            found["address"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
        except socket.gaierror as e:
            found["why"] = e.strerror or str(e)
        except OSError:
            pass

    lookup = threading.Thread(target=look_up, daemon=True)
    lookup.start()
    lookup.join(timeout_s)
    if "why" in found:
        return f"{host}: {found['why']}"
    if "address" not in found:
        return None
    try:
        socket.create_connection(found["address"][:2], timeout=connect_s).close()
    except TimeoutError:
        return f"{host}: no answer to a connection on port {port} within {connect_s:g} s"
    except OSError as e:
        return f"{host}: {e.strerror or e}"
    return None


def names_the_hub(name: str | None) -> bool:
    """A model or dataset name that is not a local path: a hub id such as meta-llama/Llama-3.1-8B."""
    return bool(name) and not name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists()


def offline_if_hub_unreachable(names: list[str | None]) -> str | None:
    """Where a name is a hub id: the line to say when the process went offline, else None. Called
    before huggingface_hub is imported (it reads HF_HUB_OFFLINE once, on import)."""
    # HF_HUB_OFFLINE=0, set by the user, skips the check: a network this slow still reaches the hub.
    if "HF_HUB_OFFLINE" in os.environ or not any(map(names_the_hub, names)):
        return None
    why = hub_unreachable()
    if why is None:
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"
    return (f"the model hub cannot be reached ({why}): models and datasets come from local folders and the "
            f"Hugging Face cache (HF_HUB_OFFLINE=1)")
