# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  workers:
    description:
      - The archive workers to ask, each with its API URL and its server_id.
      - A worker may carry its own O(workers[].token); otherwise O(api_token) is used.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The worker's name, as used in results.
        type: str
        required: true
      url:
        description: Base URL of the worker's archive store API, for example V(https://198.18.10.20:8025).
        type: str
        required: true
      server_id:
        description: The worker's server_id; every archive ID it returns must carry it.
        type: int
        required: true
      token:
        description: This worker's API bearer token.
        type: str
      ca_file:
        description: The CA certificate (PEM) to verify this worker's HTTPS certificate with; otherwise O(api_ca_file).
        type: path
  api_token:
    description: Bearer token for workers that have no O(workers[].token).
    type: str
  api_ca_file:
    description:
      - The site CA's certificate (PEM) that workers without O(workers[].ca_file) are verified with.
      - Without either, the system's trusted CAs are used. A worker whose certificate does not verify fails the task.
    type: path
  api_timeout:
    description: Seconds to wait for one API request.
    type: float
    default: 5
"""
