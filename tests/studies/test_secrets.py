"""Storage URLs are hostile: their secrets never reach the terminal, a file or a child's argv."""

import pytest

from studies.record import redact_url, scrub

CASES = [
    # URL, the secret it holds, how it is shown
    ("postgresql://alice:s3cret@db.example/tunebench", "s3cret", "postgresql://alice:***@db.example/tunebench"),
    ("postgresql+psycopg2://alice:p%40ss%3Aw%2Frd@10.0.0.1:5432/tb", "p@ss:w/rd",
     "postgresql+psycopg2://alice:***@10.0.0.1:5432/tb"),
    ("mysql://bob:hunter2@host/db?charset=utf8", "hunter2", "mysql://bob:***@host/db?charset=utf8"),
    ("postgresql://host/db?user=carol&password=qwerty123", "qwerty123",
     "postgresql://host/db?password=***&user=carol"),
]


@pytest.mark.parametrize("url, secret, shown", CASES)
def test_a_url_is_shown_without_its_secret(url, secret, shown):
    assert redact_url(url) == shown
    assert secret not in redact_url(url)


@pytest.mark.parametrize("url, secret, shown", CASES)
def test_error_messages_are_scrubbed_of_the_secret_in_any_quoting(url, secret, shown):
    from urllib.parse import quote

    message = f"could not connect: {url} (password {secret!r}, quoted {quote(secret, safe='')})"
    cleaned = scrub(message, url)
    assert secret not in cleaned and quote(secret, safe="") not in cleaned
    assert cleaned.count("***") >= 2


def test_an_unparseable_url_is_not_shown_at_all():
    assert redact_url("postgresql://u:pw@host:notaport/db") == "<storage URL not shown: it could not be parsed>"
    assert redact_url("sqlite:///results/optuna.db") == "sqlite:///results/optuna.db"  # nothing to hide


def test_a_pgpass_file_keeps_the_password_out_of_the_url(pg_url, tmp_path, monkeypatch):
    import optuna
    from sqlalchemy.engine import URL, make_url

    from studies.storage import open_storage

    url = make_url(pg_url)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{url.host}:{url.port}:{url.database}:{url.username}:{url.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    bare = URL.create(url.drivername, username=url.username, host=url.host, port=url.port,
                      database=url.database).render_as_string(hide_password=False)
    assert url.password not in bare
    storage = open_storage(bare, stale_after=None)
    optuna.create_study(storage=storage, study_name="from-pgpass")
    assert "from-pgpass" in optuna.get_all_study_names(storage)
