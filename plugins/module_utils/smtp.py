# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sending mail into a gateway, as journaling mail servers do."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import smtplib
import ssl

HELO_NAME = "mailarchive-check.invalid"


def connect(host, port=25, starttls=True, timeout=30):
    """An SMTP session to ``host``, upgraded with STARTTLS when offered and wanted.

    The gateways present self-signed lab or site certificates; the check is
    about the archive, so the certificate is not verified here.
    """
    client = smtplib.SMTP(host, port, timeout=timeout)
    client.ehlo(HELO_NAME)
    if starttls and client.has_extn("starttls"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context=context)
        client.ehlo(HELO_NAME)
    return client


def close(client):
    try:
        client.quit()
    except smtplib.SMTPException:
        pass
