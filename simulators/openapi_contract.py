"""Checks real HTTP answers against the OpenAPI document of the site controller API.

:class:`Contract` reads ``docs/site-api.openapi.yaml``, finds the operation a request reached
(by path template and method), picks the documented response by status (exact, then ``5XX``)
and validates the answer's content type, JSON body (JSON Schema 2020-12, ``$ref`` resolved
inside the document) and documented headers. A path no route matches must answer the
document's ``NotFound`` response, a method a route does not serve its ``MethodNotAllowed``.

:class:`ContractClient` sends real requests to one controller, checks every answer, and
records which (method, route, status) it saw, so that a test can assert that every documented
answer of a server was exercised (:meth:`Contract.documented`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from jsonschema import Draft202012Validator
from multidict import CIMultiDict
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from yarl import URL

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "docs" / "site-api.openapi.yaml"
WEB_DOCUMENT_PATH = DOCUMENT_PATH.with_name("web-api.openapi.yaml")
_DOCUMENT_URI = "urn:dr-gateway:site-api.openapi"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_ANYWHERE = {401: "Unauthorized", 414: "UriTooLong"}
"""Answers a server may give on any path and method, before routing, by status."""

Answered = tuple[str, str, str]
"""(METHOD, path template, response key such as ``"202"`` or ``"5XX"``)."""


class ContractError(AssertionError):
    """An answer that the document does not allow; says which request and why."""


@dataclass(frozen=True)
class Route:
    """One path of the document and the operations it serves, by upper-case method."""

    template: str
    pattern: re.Pattern[str]
    operations: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Answer:
    """A checked answer: status, decoded JSON body (None if empty) and headers."""

    status: int
    body: Any
    headers: Mapping[str, str]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _route_pattern(template: str) -> re.Pattern[str]:
    parts = _PARAMETER.split(template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(regex)


class Contract:
    """The OpenAPI document, ready to check answers."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        resource: Resource[Any] = DRAFT202012.create_resource(document)
        self._registry: Registry[Any] = Registry().with_resource(_DOCUMENT_URI, resource)
        self.routes = tuple(
            Route(
                template=template,
                pattern=_route_pattern(template),
                operations={
                    method.upper(): operation
                    for method, operation in item.items()
                    if method in _METHODS
                },
            )
            for template, item in document["paths"].items()
        )

    @classmethod
    def load(cls, path: Path = DOCUMENT_PATH) -> Contract:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")))

    def route(self, path: str) -> Route | None:
        """The route whose template matches ``path`` (as sent, percent-encoded)."""
        return next((r for r in self.routes if r.pattern.fullmatch(path)), None)

    def documented(self, server: str, *, skip: Iterable[str] = ("5XX", "414")) -> set[Answered]:
        """Every (method, template, response key) of the operations ``server`` serves."""
        skipped = set(skip)
        return {
            (method, route.template, key)
            for route in self.routes
            for method, operation in route.operations.items()
            if server in operation.get("x-served-by", ())
            for key in operation["responses"]
            if key not in skipped
        }

    def _resolve(self, node: Mapping[str, Any], pointer: str) -> tuple[Mapping[str, Any], str]:
        """Follow a local ``$ref`` (as response objects use); returns (object, its pointer)."""
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ContractError(f"only local references are supported, got {ref}")
            pointer = ref[1:]
            node = self.document
            for token in pointer[1:].split("/"):
                node = node[token.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def _validate(self, value: Any, schema_pointer: str, where: str) -> None:
        validator = Draft202012Validator(
            {"$ref": f"{_DOCUMENT_URI}#{schema_pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(
                f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
            )
            raise ContractError(f"{where}: {problems}")

    def served(self, route: Route, server: str) -> dict[str, Mapping[str, Any]]:
        """The operations of ``route`` that ``server`` serves, by method."""
        return {
            method: operation
            for method, operation in route.operations.items()
            if server in operation.get("x-served-by", ())
        }

    def check(
        self,
        server: str,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, str],
        raw_body: bytes,
    ) -> tuple[Answered, Any]:
        """Validate one answer of ``server``; returns what it answered and its JSON body.

        A path no route of ``server`` matches must be ``404``, a method its route does not
        serve ``405`` (``HEAD`` is served wherever ``GET`` is); ``401`` and ``414`` (a target
        too long to read) are allowed anywhere.
        """
        where = f"{server}: {method} {path} -> {status}"
        route = self.route(path.partition("?")[0])
        operations = {} if route is None else self.served(route, server)
        if "GET" in operations and "HEAD" not in operations:
            operations["HEAD"] = operations["GET"]
        template = "<no route>" if route is None or not operations else route.template
        if status in _ANYWHERE and method not in operations:
            response_pointer = f"/components/responses/{_ANYWHERE[status]}"
            expected_status, answered = status, (method, template, str(status))
        elif not operations:
            response_pointer = "/components/responses/NotFound"
            expected_status, answered = 404, (method, template, "404")
        elif method not in operations:
            response_pointer = "/components/responses/MethodNotAllowed"
            expected_status, answered = 405, (method, template, "405")
        else:
            assert route is not None
            operation_method = method if method in route.operations else "GET"
            operation_pointer = f"/paths/{_escape(route.template)}/{operation_method.lower()}"
            responses = operations[method]["responses"]
            key = next((k for k in (str(status), f"{status // 100}XX") if k in responses), None)
            if key is None:
                raise ContractError(f"{where}: status not documented ({sorted(responses)})")
            response_pointer = f"{operation_pointer}/responses/{key}"
            expected_status, answered = status, (method, route.template, key)
        if status != expected_status:
            raise ContractError(f"{where}: expected {expected_status}")
        response, response_pointer = self._resolve({"$ref": f"#{response_pointer}"}, "")
        self._check_headers(response, response_pointer, headers, where)
        return answered, self._check_body(
            method, response, response_pointer, headers, raw_body, where
        )

    def _check_headers(
        self,
        response: Mapping[str, Any],
        pointer: str,
        headers: Mapping[str, str],
        where: str,
    ) -> None:
        for name, spec in response.get("headers", {}).items():
            header, header_pointer = self._resolve(spec, f"{pointer}/headers/{_escape(name)}")
            value = headers.get(name)
            if value is None:
                if header.get("required", False):
                    raise ContractError(f"{where}: header {name} missing")
                continue
            schema, schema_pointer = self._resolve(header["schema"], f"{header_pointer}/schema")
            typed: Any = value
            if schema.get("type") == "integer":
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise ContractError(f"{where}: header {name}={value!r} is not an integer")
                typed = int(value)
            self._validate(typed, schema_pointer, f"{where}: header {name}")

    def _check_body(
        self,
        method: str,
        response: Mapping[str, Any],
        pointer: str,
        headers: Mapping[str, str],
        raw_body: bytes,
        where: str,
    ) -> Any:
        content = response.get("content")
        if method == "HEAD" or not content:
            if raw_body:
                raise ContractError(f"{where}: expected no body, got {raw_body[:80]!r}")
            return None
        media_type = headers.get("Content-Type", "").partition(";")[0].strip()
        if media_type not in content:
            raise ContractError(f"{where}: Content-Type {media_type!r}, documented {list(content)}")
        if media_type != "application/json":
            return None
        try:
            body = json.loads(raw_body)
        except ValueError as exc:
            raise ContractError(f"{where}: body is not JSON: {raw_body[:200]!r}") from exc
        schema_pointer = f"{pointer}/content/{_escape(media_type)}/schema"
        self._validate(body, schema_pointer, where)
        return body


class ContractClient:
    """Sends requests to one controller and checks each answer against the contract.

    ``expect`` is the status the scenario expects; the answer must also be one the document
    allows. ``seen`` collects what was answered, for a coverage check.
    """

    def __init__(
        self,
        contract: Contract,
        server: str,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        seen: set[Answered],
    ) -> None:
        self.contract = contract
        self.server = server
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.seen = seen

    async def call(
        self,
        method: str,
        path: str,
        *,
        expect: int,
        json_body: Any = None,
        data: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        authorize: bool = True,
    ) -> Answer:
        """One request; ``path`` is sent as written (already percent-encoded, not normalised)."""
        sent_headers = dict(headers or {})
        if authorize:
            sent_headers["Authorization"] = f"Bearer {token or self.token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, URL(self.base_url + path, encoded=True), data=data, headers=sent_headers
        ) as response:
            raw = await response.read()
            status = response.status
            answer_headers = CIMultiDict(response.headers)
        answered, body = self.contract.check(self.server, method, path, status, answer_headers, raw)
        self.seen.add(answered)
        if status != expect:
            raise ContractError(f"{method} {path}: expected {expect}, got {status}: {raw[:300]!r}")
        return Answer(status, body, answer_headers)
