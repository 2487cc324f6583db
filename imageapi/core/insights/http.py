"""One bounded GET for the small JSON services insights reads (Nominatim, Apollo Places, the SMS API):
an overall deadline (a server that trickles bytes cannot hold a request open), a size cap, and every
transport failure turned into the caller's ServiceError type."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from imageapi.core.errors import ServiceError


async def get_json(client: httpx.AsyncClient, url: str, params: dict[str, Any], *, what: str, timeout: float,
                   max_bytes: int, error: type[ServiceError]) -> tuple[int, Any, bytes]:
    """(status, parsed JSON or None for a 4xx/5xx, the raw body). Raises `error` when the service
    cannot be reached, is too slow, sends too much, or a 2xx/3xx answer is not JSON."""
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, params=params) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise error(f"{what}: answer larger than {max_bytes} bytes")
                status = resp.status_code
    except ServiceError:
        raise
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise error(f"cannot connect to {what}") from None
    except (TimeoutError, httpx.TimeoutException):
        raise error(f"{what}: no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise error(f"{what}: {type(exc).__name__}: {exc}") from None
    if status >= 400:
        return status, None, bytes(body)
    try:
        return status, json.loads(body), bytes(body)
    except (ValueError, RecursionError):
        raise error(f"{what}: the answer is not JSON") from None
