"""JWT access tokens from an operator's identity provider, verified against its JWKS (PyJWT does the JOSE).

Checked: the signature with a key of the JWKS named by the token's `kid` (a key set is cached `cache_seconds`;
an unknown `kid` fetches the set again, at most once every `refetch_after` seconds, so rotated keys are picked up
and random `kid`s cannot make us hammer the provider), the algorithm against an allow-list (never `none`, never
an HMAC algorithm with a public key), the issuer, the audience, `exp` (required) and `nbf` with a clock skew.
The subject and the scopes are taken from configurable claims (scopes: a space-separated string, as RFC 9068
says, or a list).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
import jwt
import structlog
from mcp.server.auth.provider import AccessToken
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["JwtSettings", "JwtVerifier"]

log = structlog.get_logger(__name__)

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class JwtSettings(BaseModel):
    """`jwt:` in the settings file (or `MCPGW_JWT__ISSUER`, ...): turns on JWT access tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jwks_url: str = Field(pattern=r"^https?://", description="the identity provider's JWKS (its jwks_uri)")
    issuer: str = Field(min_length=1, description="the `iss` every token must carry")
    audience: str = Field(min_length=1, description="the `aud` every token must carry (this gateway's resource)")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"], min_length=1)
    leeway: float = Field(default=30.0, ge=0, le=600, description="clock skew allowed on exp and nbf, seconds")
    subject_claim: str = "sub"
    scopes_claim: str = "scope"
    cache_seconds: float = Field(default=300.0, gt=0, description="how long a fetched key set is used")
    refetch_after: float = Field(default=30.0, ge=0, description="least seconds between fetches for unknown kids")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        wrong = [a for a in value if a not in ASYMMETRIC]
        if wrong:
            raise ValueError(f"algorithms {wrong} are not allowed: expected some of {', '.join(ASYMMETRIC)}")
        return value


class JwtVerifier:
    def __init__(self, settings: JwtSettings, *, client: httpx2.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < min(self.settings.refetch_after, self.settings.cache_seconds):
                return  # another request fetched it just now
            self._fetched_at = time.monotonic()  # a failed fetch waits out refetch_after too
            try:
                client = self._client or httpx2.AsyncClient(timeout=5.0)
                try:
                    response = await client.get(self.settings.jwks_url)
                    response.raise_for_status()
                    data = response.json()
                finally:
                    if self._client is None:
                        await client.aclose()
                keys = jwt.PyJWKSet.from_dict(data).keys
            except Exception as exc:
                log.warning("auth.jwks_unavailable", url=self.settings.jwks_url, error=str(exc)[:200])
                return
            self._keys = {k.key_id: k for k in keys if k.key_id}
            log.info("auth.jwks_fetched", url=self.settings.jwks_url, keys=len(self._keys))

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        if time.monotonic() - self._fetched_at >= self.settings.cache_seconds:
            await self._fetch()
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._fetched_at >= self.settings.refetch_after:
            await self._fetch()  # a rotated key
            key = self._keys.get(kid)
        return key

    async def verify(self, token: str) -> AccessToken | None:
        """The access token for a JWT that passes every check; None (and a debug line saying why) otherwise."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            kid, alg = header.get("kid"), header.get("alg")
            if not isinstance(kid, str) or alg not in s.algorithms:
                raise jwt.InvalidTokenError(f"alg {alg!r} not allowed or no kid")
            key = await self._key(kid)
            if key is None:
                raise jwt.InvalidTokenError(f"no key {kid!r} in the JWKS")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            log.debug("auth.jwt_refused", reason=str(exc)[:200])
            return None
        subject = claims.get(s.subject_claim)
        if not isinstance(subject, str) or not subject:
            log.debug("auth.jwt_refused", reason=f"no {s.subject_claim!r} claim")
            return None
        raw = claims.get(s.scopes_claim, "")
        scopes = raw.split() if isinstance(raw, str) else [str(x) for x in raw] if isinstance(raw, list) else []
        client_id = claims.get("client_id") or claims.get("azp") or subject
        return AccessToken(
            token=token,
            client_id=str(client_id),
            subject=subject,
            scopes=scopes,
            expires_at=int(claims["exp"]),
            claims={"iss": claims.get("iss"), "kind": "jwt"},
        )
