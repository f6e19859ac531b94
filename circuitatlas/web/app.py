"""The viewer and JSON service as an ASGI app (Starlette): every page at a stable URL with its
JSON twin under ``/api/``, files from the artifacts folder only, a read-only store, and an
optional token that every request must carry.

Errors become pages (or JSON under ``/api/``) with one line each: 404 for what the graph does
not hold, 400 for bad parameters or a refused console query, 503 when Neo4j cannot be reached."""

from __future__ import annotations

import gc
import hmac
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from circuitatlas.errors import CircuitAtlasError, ConnectionFailed, InvalidInput, NotFound, QueryError
from circuitatlas.store import ReadOnlyStore, Store
from circuitatlas.web import figures, pages

__all__ = ["create_app", "is_loopback", "freeze_startup_objects", "TOKEN_ENV", "TOKEN_COOKIE"]

TOKEN_ENV = "CIRCUITATLAS_SERVE_TOKEN"
TOKEN_COOKIE = "circuitatlas_token"
HERE = Path(__file__).parent
log = logging.getLogger(__name__)
STATUS = ((NotFound, 404), (InvalidInput, 400), (QueryError, 400), (ConnectionFailed, 503))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def freeze_startup_objects() -> None:
    """Take every object alive now (torch, numpy, the app: some 200k) out of the garbage
    collector's full passes, which otherwise walk them all about once per large page (GoogLeNet's
    1024-unit layer page: p95 300 ms before, 120 ms after). For the serving process, at start."""
    gc.collect()
    gc.freeze()


def _number(request: Request, name: str, default: Any, kind: type) -> Any:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a {'whole number' if kind is int else 'number'}, not {text!r}") from None


# -- one function per page: (store, request) -> its data --------------------------------------
def _models(store: Store, request: Request) -> dict:
    return pages.models_page(store)


def _model(store: Store, request: Request) -> dict:
    return pages.model_page(store, request.path_params["model"])


def _layer(store: Store, request: Request) -> dict:
    return pages.layer_page(store, request.path_params["model"], request.path_params["layer"])


def _neuron(store: Store, request: Request) -> dict:
    p = request.path_params
    return pages.neuron_page(store, p["model"], p["layer"], p["channel"])


def _circuit(store: Store, request: Request) -> dict:
    d = pages.CIRCUIT_DEFAULTS
    return pages.circuit_page(store, request.path_params["model"], request.query_params.get("units", ""),
                              depth=_number(request, "depth", d["depth"], int),
                              min_rel=_number(request, "min_rel", d["min_rel"], float),
                              kind=request.query_params.get("kind") or d["kind"],
                              limit=_number(request, "limit", d["limit"], int))


def _svd(store: Store, request: Request) -> dict:
    return pages.svd_page(store, request.path_params["model"], request.query_params.get("analysis", ""))


def _motif(store: Store, request: Request) -> dict:
    return pages.motif_page(store, request.path_params["uid"])


def _console(store: Store, request: Request) -> dict:
    return pages.console_page(store, request.query_params.get("q", ""),
                              limit=_number(request, "limit", pages.CONSOLE_LIMIT, int))


# path, page name (its template and figures), data
PAGES: tuple[tuple[str, str, Callable[[Store, Request], dict]], ...] = (
    ("/", "models", _models),
    ("/models/{model}", "model", _model),
    ("/models/{model}/layers/{layer}", "layer", _layer),
    ("/models/{model}/layers/{layer}/{channel:int}", "neuron", _neuron),
    ("/models/{model}/circuit", "circuit", _circuit),
    ("/models/{model}/svd", "svd", _svd),
    ("/motifs/{uid:path}", "motif", _motif),
    ("/console", "console", _console),
)


class TokenRequired:
    """ASGI middleware: every request carries the token as ``Authorization: Bearer <token>``, the
    ``circuitatlas_token`` cookie, or ``?token=`` (which sets the cookie and redirects to the URL
    without it, so that links keep working and the token leaves the address bar)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        given = (header[7:] if header.lower().startswith("bearer ") else None) or request.cookies.get(TOKEN_COOKIE)
        in_url = request.query_params.get("token")
        if in_url is not None and self._ok(in_url):
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response: Response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
            response.set_cookie(TOKEN_COOKIE, in_url, httponly=True, samesite="strict")
        elif given is not None and self._ok(given):
            await self.app(scope, receive, send)
            return
        else:
            response = _error(request, 401, "this server needs its token: open a URL with ?token=<token> once, "
                                            "or send 'Authorization: Bearer <token>'")
        await response(scope, receive, send)

    def _ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, fmt="{:.3g}": "" if v is None else fmt.format(v)
    env.filters["json"] = lambda v, indent=None: json.dumps(v, indent=indent, default=str)  # escaped as text
    return env


TEMPLATES = _templates()


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "status": status}, status)
    html = TEMPLATES.get_template("error.html").render(status=status, message=message, page="error")
    return HTMLResponse(html, status)


def _failure(request: Request, exc: Exception) -> Response:
    """The response for an exception a page raised: one line, never a traceback."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            message = str(exc)
            if status == 503:
                message = (f"Neo4j is not reachable: {exc}. Start the local server with `circuitatlas db start` "
                           "(or point NEO4J_URI at yours), then reload.")
            return _error(request, status, message)
    if isinstance(exc, CircuitAtlasError):
        return _error(request, 400, str(exc))
    log.exception("page %s failed", request.url.path)
    return _error(request, 500, f"internal error ({type(exc).__name__}); the server log has the details")


def _answering(respond: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """A route that turns every failure of ``respond`` into an error page (:func:`_failure`)."""
    def route(request: Request) -> Response:
        try:
            return respond(request)
        except Exception as exc:  # noqa: BLE001 -- every failure becomes an error page
            return _failure(request, exc)
    return route


def _html_route(store: Store, name: str, data: Callable[[Store, Request], dict]) -> Callable:
    template = TEMPLATES.get_template(f"{name}.html")
    draw = figures.FIGURES.get(name, lambda _: {})

    def page(request: Request) -> Response:
        found = data(store, request)
        path = request.url.path if request.url.path != "/" else "/models"
        api_url = f"/api{path}" + (f"?{request.url.query}" if request.url.query else "")
        return HTMLResponse(template.render(page=name, data=found, figures=draw(found), api_url=api_url,
                                            params=dict(request.query_params)))
    return _answering(page)


def _api_route(store: Store, data: Callable[[Store, Request], dict]) -> Callable:
    return _answering(lambda request: JSONResponse(data(store, request)))


def _circuit_svg(store: Store) -> Callable:
    def svg(request: Request) -> Response:
        body = figures.circuit_figure(_circuit(store, request), image_url=figures.inline_image)
        return Response('<?xml version="1.0" encoding="UTF-8"?>\n' + body, media_type="image/svg+xml",
                        headers={"Content-Disposition": 'attachment; filename="circuit.svg"'})
    return _answering(svg)


def _file(request: Request) -> Response:
    """A file under the artifacts folder; 404 for any path that resolves outside it."""
    found = pages.artifact_file(unquote(request.path_params["path"]))
    if found is None:
        return _error(request, 404, "no such file in the artifacts folder")
    return FileResponse(found)


def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, f"no page at {request.url.path}")


def create_app(store: Store, token: str | None = None) -> Starlette:
    """The viewer over ``store`` (used read-only: writes are refused before a session opens).
    With ``token``, every request must carry it (see :class:`TokenRequired`)."""
    store = ReadOnlyStore.over(store)
    routes = [Route("/models/{model}/circuit.svg", _circuit_svg(store)),
              Route("/api/models", _api_route(store, _models))]
    for path, name, data in PAGES:
        routes.append(Route(path, _html_route(store, name, data)))
        if path != "/":
            routes.append(Route("/api" + path, _api_route(store, data)))
    routes += [Route(pages.FILES + "{path:path}", _file),
               Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    middleware = [Middleware(TokenRequired, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: _not_found})
