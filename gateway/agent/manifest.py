"""The job manifest a source agent sends the target before a checkpoint: how to run the job.

``PUT /v1/manifests/{migration_id}`` ``{"job_id", "command", "source_site_id"}`` with the
target's bearer token (``docs/site-api.md``, agent only). Sent again after a failure that may
pass (no answer, 5xx), a few times with back-off. To an ``https://`` target the caller's session
presents the agent's certificate and verifies the target's (``[tls]``, ``docs/site-agent.md``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp

from gateway.agent.state import Manifest

_ATTEMPTS = 5
_BACKOFF_INITIAL_S = 0.2
_TIMEOUT_S = 30.0
_DETAIL_MAX_CHARS = 300


class ManifestError(Exception):
    """The target agent did not take the manifest."""


async def send_manifest(
    session: aiohttp.ClientSession,
    target_url: str,
    target_token: str,
    migration_id: str,
    manifest: Manifest,
) -> None:
    """Deliver ``manifest`` for ``migration_id`` to the agent at ``target_url``; raises
    ManifestError when the target refuses it or stays unreachable."""
    url = f"{target_url.rstrip('/')}/v1/manifests/{quote(migration_id, safe='')}"
    body = {
        "job_id": manifest.job_id,
        "command": list(manifest.command),
        "source_site_id": manifest.source_site_id,
    }
    headers = {"Authorization": f"Bearer {target_token}"}
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with session.put(url, json=body, headers=headers, timeout=timeout) as response:
                if response.status in (200, 201):
                    return
                text = (await response.text())[:_DETAIL_MAX_CHARS]
                if response.status < 500:
                    raise ManifestError(f"manifest refused: {response.status} {text}")
                problem = f"{response.status} {text}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if attempt == _ATTEMPTS:
            raise ManifestError(f"manifest not delivered after {attempt} attempts: {problem}")
        await asyncio.sleep(_BACKOFF_INITIAL_S * 2 ** (attempt - 1))
