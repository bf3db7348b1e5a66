# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' side of the archive store's API: their shared options (the archive_api doc fragment).

The client itself is shared with the store's other users: archive_client.py is a link to
src/archive_common/client.py (see src/README.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_client import ArchiveApi, ArchiveApiError


def worker_options():
    """The suboptions of one worker: O(workers[]) of the archive_api doc fragment."""
    return dict(
        name=dict(type="str", required=True),
        url=dict(type="str", required=True),
        server_id=dict(type="int", required=True),
        token=dict(type="str", no_log=True),
        ca_file=dict(type="path"),
    )


def archive_api_argument_spec():
    """The options of the archive_api doc fragment, for a module's argument_spec."""
    return dict(
        workers=dict(type="list", elements="dict", required=True, options=worker_options()),
        api_token=dict(type="str", no_log=True),
        api_ca_file=dict(type="path"),
        api_timeout=dict(type="float", default=5),
    )


def worker_apis(params, option="workers"):
    """An ArchiveApi per entry of O(workers) (or another list of worker_options()), with O(api_token) as fallback."""
    if not params[option]:
        raise ArchiveApiError("%s: expected at least one worker, found an empty list" % option)
    apis = []
    for spec in params[option]:
        token = spec.get("token") or params.get("api_token")
        if not token:
            raise ArchiveApiError("worker %s: no API token (set workers[].token or api_token)" % spec["name"])
        apis.append(ArchiveApi(spec["name"], spec["url"], token, params["api_timeout"], spec.get("server_id"),
                               cafile=spec.get("ca_file") or params.get("api_ca_file")))
    return apis
