"""Optuna's RDB storage on a real PostgreSQL server (the conftest's postgres_server / pg_url)."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial
from sqlalchemy.engine import make_url


def test_study_written_through_one_storage_is_read_back_through_another(pg_url):
    writer = RDBStorage(pg_url)
    assert writer.engine.dialect.name == "postgresql"
    study = optuna.create_study(study_name="pg", storage=writer, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("preset", "quick")
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "width": IntDistribution(8, 64)}
    study.add_trial(create_trial(params={"lr": 0.01, "width": 32}, distributions=dists,
                                 value=0.5, intermediate_values={0: 0.9, 1: 0.6}))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True)
                   * t.suggest_int("width", 8, 64), n_trials=3)
    pruned = study.ask(dists)
    study.tell(pruned, state=TrialState.PRUNED)
    expected = [(t.number, t.state, t.value, t.params, t.intermediate_values)
                for t in study.trials]

    reader = RDBStorage(pg_url)
    loaded = optuna.load_study(study_name="pg", storage=reader)
    assert [(t.number, t.state, t.value, t.params, t.intermediate_values)
            for t in loaded.trials] == expected
    assert [t.state for t in loaded.trials] == [TrialState.COMPLETE] * 4 + [TrialState.PRUNED]
    assert loaded.best_value == min(v for _, s, v, _, _ in expected if s == TrialState.COMPLETE)
    assert loaded.user_attrs == {"preset": "quick"}
    assert loaded.direction == optuna.study.StudyDirection.MINIMIZE
    writer.engine.dispose()
    reader.engine.dispose()


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_connection_without_the_right_password_is_refused(pg_url, password):
    url = make_url(pg_url)
    assert url.password  # the fixture's URL carries the superuser's password
    # (URL.set(password=None) keeps the password: build the URL afresh.)
    engine = sqlalchemy.create_engine(sqlalchemy.URL.create(
        url.drivername, username=url.username, password=password, host=url.host, port=url.port,
        database=url.database))
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError,
                           match="password authentication failed|no password supplied"):
            with engine.connect():
                pass
    finally:
        engine.dispose()
    # The right password still gets in.
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select current_database()")).scalar() \
                == url.database
    finally:
        engine.dispose()
