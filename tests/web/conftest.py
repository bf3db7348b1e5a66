"""Fixtures: two real stores serving their HTTPS API, and the web interface's application over them (webenv)."""

import pytest

from webenv import Site


@pytest.fixture
def site(tmp_path):
    running = Site(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def app(site):
    from archive_web import config, create_app

    return create_app(config.load(site.web_conf()))
