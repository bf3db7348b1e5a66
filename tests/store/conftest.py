"""Fixtures: a complete store configuration in a temporary directory (storeenv.StoreEnv)."""

import pytest

from storeenv import StoreEnv


@pytest.fixture
def env(tmp_path):
    store_env = StoreEnv(tmp_path)
    yield store_env
    store_env.stop()
