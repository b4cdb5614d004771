"""A throwaway PostgreSQL server for the tests, from Debian's ``postgresql`` package.

The server lives in one folder (data directory, log, unix socket), listens on 127.0.0.1
only, on a free port, and asks every connection for the superuser's password
(scram-sha-256). PostgreSQL refuses to run as root, so when we are root its programs run
as the ``postgres`` system user (created by the Debian package) through ``runuser`` and the
folder is handed to that user. The password reaches initdb through a file, never argv.

    python -m tests.postgres start DIR   # prints `export TUNEBENCH_TEST_POSTGRES=...` for eval
    python -m tests.postgres stop DIR    # pg_ctl stop -m fast
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ENV_VAR = "TUNEBENCH_TEST_POSTGRES"
SYSTEM_USER = "postgres"  # the account Debian's package creates; used only when we are root
SUPERUSER = "postgres"
DATA = "data"
LOG = "postgres.log"
# sun_path holds 107 bytes; the socket is FOLDER/.s.PGSQL.<port>.
MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, or None."""
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        bin_dir = initdb.parent
        if os.access(initdb, os.X_OK) and os.access(bin_dir / "pg_ctl", os.X_OK):
            version = tuple(int(p) for p in re.findall(r"\d+", bin_dir.parent.name))
            found.append((version, bin_dir))
    return max(found)[1] if found else None


@dataclass
class Server:
    """A PostgreSQL server reachable on host:port as superuser/password.

    ``folder`` is set only for a server this module started (``stop`` stops it); a server
    described by a URL (``from_url``) belongs to someone else and ``stop`` leaves it alone.
    """

    port: int
    host: str = "127.0.0.1"
    superuser: str = SUPERUSER
    password: str = field(default="", repr=False)
    folder: Path | None = None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL, password included: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB."""
        return (f"postgresql+psycopg2://{quote(self.superuser, safe='')}:"
                f"{quote(self.password, safe='')}@{self.host}:{self.port}/{quote(database, safe='')}")

    def connect(self, database: str = "postgres"):
        """A psycopg2 connection as the superuser."""
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.superuser,
                                password=self.password, dbname=database, connect_timeout=10)

    def stop(self) -> None:
        if self.folder is not None:
            stop(self.folder)


def from_url(url: str) -> Server:
    """The server a URL such as $TUNEBENCH_TEST_POSTGRES points at (not ours to stop)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.drivername.startswith("postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {u.drivername}://...")
    return Server(port=u.port or 5432, host=u.host or "127.0.0.1",
                  superuser=u.username or SUPERUSER, password=u.password or "")


def _as_root() -> bool:
    return os.geteuid() == 0


def _owner() -> tuple[int, int] | None:
    """uid and gid of the postgres system user when we are root, else None."""
    if not _as_root():
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(f"running as root, but there is no {SYSTEM_USER!r} user to run "
                           "PostgreSQL as (Debian's postgresql package creates it)") from None
    return entry.pw_uid, entry.pw_gid


def _run(argv: list[str], folder: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program, as the postgres user when we are root."""
    program = Path(argv[0]).name
    if _as_root():
        argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
    # The caller's PGPORT, PGDATA, PGPASSWORD... must not steer our programs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    proc = subprocess.run(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{program} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def _check_reachable(folder: Path, uid: int) -> None:
    """The postgres user must be able to walk down to the folder (pytest's basetemp is 0700)."""
    for parent in folder.parents:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            raise RuntimeError(f"user {SYSTEM_USER!r} cannot enter {parent} (mode "
                               f"{stat.filemode(st.st_mode)}); put the server's folder elsewhere, "
                               "e.g. tempfile.mkdtemp() under /tmp")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(folder: Path, lines: int = 20) -> str:
    try:
        return "\n".join((folder / LOG).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(folder: str | os.PathLike, timeout: float = 60) -> Server:
    """initdb a new cluster in FOLDER/data and start it; returns once it accepts connections."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin "
                           "(apt-get install postgresql)")
    folder = Path(folder).resolve()
    if len(str(folder)) > MAX_SOCKET_DIR:
        raise ValueError(f"folder path too long for a unix socket ({len(str(folder))} > "
                         f"{MAX_SOCKET_DIR} characters): {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / DATA).exists():
        raise FileExistsError(f"{folder / DATA} already exists; start wants a fresh folder")
    owner = _owner()
    if owner is not None:
        _check_reachable(folder, owner[0])
        os.chown(folder, *owner)
    folder.chmod(0o700)

    password = secrets.token_urlsafe(24)
    pwfile = folder / "pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if owner is not None:
            os.chown(pwfile, *owner)
        _run([str(bin_dir / "initdb"), "-D", str(folder / DATA), "-U", SUPERUSER,
              f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
              "--no-sync", "--no-instructions"], folder)
    finally:
        pwfile.unlink(missing_ok=True)

    # Throwaway data: no durability, only loopback TCP, the socket next to the data.
    with open(folder / DATA / "postgresql.conf", "a") as f:
        f.write("\n# tests/postgres.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{folder}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    # The free port may be taken before the server binds it: try another one.
    for attempt in range(3):
        port = free_port()
        proc = _run([str(bin_dir / "pg_ctl"), "-D", str(folder / DATA), "-l", str(folder / LOG),
                     "-o", f"-p {port}", "-w", "-t", str(int(timeout)), "start"],
                    folder, check=False)
        if proc.returncode == 0:
            return Server(port=port, password=password, folder=folder)
        if "could not bind" not in _log_tail(folder, 50) or attempt == 2:
            break
    raise RuntimeError(f"pg_ctl start failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                       f"--- {folder / LOG} ---\n{_log_tail(folder)}")


def stop(folder: str | os.PathLike) -> None:
    """Stop the server started in FOLDER (fast shutdown); nothing to do if it is not running."""
    folder = Path(folder).resolve()
    bin_dir = binaries()
    if bin_dir is None or not (folder / DATA / "postmaster.pid").exists():
        return
    _run([str(bin_dir / "pg_ctl"), "-D", str(folder / DATA), "-m", "fast", "-w", "-t", "60",
          "stop"], folder)


def create_database(server: Server, name: str) -> str:
    """CREATE DATABASE NAME on the server; returns its SQLAlchemy URL."""
    from psycopg2 import sql

    conn = server.connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return server.url(name)


def drop_database(server: Server, name: str) -> None:
    """DROP DATABASE NAME, closing whatever connections to it are still open."""
    from psycopg2 import sql

    conn = server.connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.postgres", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("folder", help="a fresh folder for the server's data, log and socket")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.folder)
        return 0
    t0 = time.monotonic()
    server = start(args.folder)
    print(f"PostgreSQL on 127.0.0.1:{server.port} in {time.monotonic() - t0:.1f} s "
          f"({args.folder})", file=sys.stderr)
    print(f"export {ENV_VAR}={shlex.quote(server.url('postgres'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
