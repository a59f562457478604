"""A small HTTP client for the console's API, with a cookie jar (tests only)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    @property
    def error(self) -> str:
        return str(self.body.get("error", ""))


@dataclass
class ConsoleClient:
    """Sends requests as a browser would: the jar's cookies, the CSRF header on POSTs."""

    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_headers: list[str] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        return self.cookies.get("hatchway-csrf", "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: str | None = None,
        content_type: str = "application/json",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {**(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = raw
        if method == "POST":
            sent["Content-Type"] = content_type
            sent["X-CSRF-Token"] = self.csrf if csrf is None else csrf
            if data is None:
                data = json.dumps(body if body is not None else {}).encode()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            self.set_cookie_headers.append(header)
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Reply(response.status, response.headers, payload)

    def sign_in(self, username: str, password: str, code: str | None = None) -> Reply:
        body = {"username": username, "password": password}
        if code is not None:
            body["code"] = code
        return self.request("POST", "/api/login", body)
