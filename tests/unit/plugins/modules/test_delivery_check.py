"""delivery_check with a copy site: probes sent through a gateway that copies every message to a second
site (as the primary's gateways copy to the DR site) must be archived, and removed, at both."""

import pytest

from stores import StoreSite


@pytest.fixture
def sites(tmp_path):
    """(primary, dr): the primary's gateway delivers to its store and copies to the DR store."""
    (tmp_path / "dr").mkdir()
    (tmp_path / "primary").mkdir()
    dr = StoreSite(tmp_path / "dr", "dr", 10)
    primary = StoreSite(tmp_path / "primary", "primary", 0, copy_to=dr)
    yield primary, dr
    for site in (primary, dr):
        site.stop()


def check(primary, copy_workers, **over):
    args = {"gateway": "127.0.0.1", "port": primary.smtp_port, "recipient": "archive@primary.test", "count": 5,
            "timeout": 20, "starttls": False, "remove_probes": True, "workers": primary.workers(),
            "copy_workers": copy_workers}
    args.update(over)
    return args


def test_probes_are_proven_and_removed_at_the_copy_site_too(sites, module):
    primary, dr = sites
    result = module("delivery_check", check(primary, dr.workers()))
    assert not result.get("failed"), result["msg"]
    assert result["copy_site"]["spread"] == {"dr-worker": 5}
    assert result["copy_site"]["lost"] == [] and result["copy_site"]["mismatched"] == []
    assert len(result["copy_site"]["removed"]["dr-worker"]) == 5
    assert len(result["removed"]["primary-worker"]) == 5
    assert (primary.count(), dr.count()) == (0, 0)


def test_probes_missing_at_the_copy_site_fail_naming_it(sites, module):
    primary, dr = sites
    # Sent through the DR site's gateway, which copies nowhere, with the primary named as the copy site.
    result = module("delivery_check", check(dr, primary.workers(), recipient="archive@dr.test",
                                            workers=dr.workers(), timeout=3))
    assert result["failed"]
    assert "at the copy site: 5 lost" in result["msg"]
    assert "\n" not in result["msg"]
    assert result["lost"] == [] and len(result["removed"]["dr-worker"]) == 5, "the site's own probes are still removed"
    assert dr.count() == 0


def test_a_worker_named_in_both_lists_is_refused(sites, module):
    primary, dr = sites
    result = module("delivery_check", check(primary, primary.workers()))
    assert result["failed"]
    assert result["msg"] == "copy_workers: primary-worker also in workers; the copy site is another site"
    assert primary.count() == 0, "probes were sent although the options were wrong"
