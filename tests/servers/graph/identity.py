"""The Microsoft identity platform as msal sees it: OpenID metadata, instance
discovery, the v2.0 token endpoint (client credentials with a secret or a
certificate assertion, device code, refresh token) and the device-code
endpoint; plus the bearer-token check every Graph request passes.

Tests act as the user or the admin through :class:`Identity`'s methods:
``approve(user_code, upn)`` signs a device code in, ``expire_tokens()`` makes
every issued access token stale, ``revoke_consent(client_id)`` withdraws the
app's permissions."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.servers.graph.model import GraphError, Tenant
from tests.servers.graph.odata import json_response
from tests.servers.httpfake import Request, Response

if TYPE_CHECKING:
    from tests.servers.graph.server import GraphFake

GRAPH_AUDIENCE = "https://graph.microsoft.com"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """JWT-shaped (clients must not validate Graph access tokens; msal only decodes id tokens)."""
    header = b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": "fake"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(secrets.token_bytes(32))}"


@dataclass
class App:
    client_id: str
    secret: str | None = None
    certificate_pem: bytes | None = None  # the public certificate uploaded to the app registration
    public: bool = False  # "Allow public client flows" (device code)
    #: application access policy: the mailboxes (upn or id) an app-only token may open; None: all
    allowed_users: set[str] | None = None
    consented: bool = True


@dataclass
class TokenInfo:
    token: str
    client_id: str
    user_id: str | None  # None: app-only
    expires_at: float
    scopes: list[str] = field(default_factory=list)


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scopes: list[str]
    expires_at: float
    user_id: str | None = None  # set when approved
    declined: bool = False
    polls: int = 0


class Identity:
    def __init__(self, fake: GraphFake, tenant: Tenant):
        self.fake = fake
        self.tenant = tenant
        self.apps: dict[str, App] = {}
        self.lock = threading.Lock()
        self.tokens: dict[str, TokenInfo] = {}
        self.refresh_tokens: dict[str, tuple[str, str, list[str]]] = {}  # -> (client_id, user_id, scopes)
        self.device_codes: dict[str, DeviceCode] = {}
        self.lifetime = 3600.0  # access token lifetime in seconds
        self.device_interval = 5  # seconds msal waits between polls
        self.device_lifetime = 900.0

    # -- test-facing ----------------------------------------------------------
    def register_app(self, client_id: str | None = None, **kwargs: Any) -> App:
        app = App(client_id or str(uuid.uuid4()), **kwargs)
        self.apps[app.client_id] = app
        return app

    def approve(self, user_code: str, upn: str) -> None:
        """The user signs in at the verification page and enters ``user_code``."""
        with self.lock:
            for flow in self.device_codes.values():
                if flow.user_code == user_code:
                    flow.user_id = self.tenant.user(upn).id
                    return
        raise KeyError(user_code)

    def decline(self, user_code: str) -> None:
        with self.lock:
            for flow in self.device_codes.values():
                if flow.user_code == user_code:
                    flow.declined = True

    def pending_user_codes(self) -> list[str]:
        with self.lock:
            return [f.user_code for f in self.device_codes.values() if f.user_id is None and not f.declined]

    def expire_tokens(self, client_id: str | None = None) -> None:
        """Every access token issued so far (to one app, or to all) is now past its lifetime."""
        with self.lock:
            for info in self.tokens.values():
                if client_id is None or info.client_id == client_id:
                    info.expires_at = 0.0

    def revoke_consent(self, client_id: str, *, invalidate_tokens: bool = False) -> None:
        """The admin removes the app's permissions: Graph answers 403 ErrorAccessDenied to its
        tokens (401 once they are invalidated), and delegated grants fail with AADSTS65001."""
        self.apps[client_id].consented = False
        if invalidate_tokens:
            with self.lock:
                for token in [t for t, i in self.tokens.items() if i.client_id == client_id]:
                    del self.tokens[token]
                for token in [t for t, r in self.refresh_tokens.items() if r[0] == client_id]:
                    del self.refresh_tokens[token]

    def grant_consent(self, client_id: str) -> None:
        self.apps[client_id].consented = True

    # -- endpoints ----------------------------------------------------------------
    def known_tenant(self, name: str) -> bool:
        return name.lower() in {self.tenant.id, self.tenant.domain.lower(), "organizations", "common"}

    def openid_configuration(self, tenant: str) -> Response:
        if not self.known_tenant(tenant):
            return self._oauth_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{self.fake.url}/{self.tenant.id}"
        return json_response({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.fake.url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "oid", "tid", "preferred_username"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        })  # fmt: skip

    def instance_discovery(self, request: Request) -> Response:
        """``/common/discovery/instance``: msal's authority validation when instance_discovery is this URL."""
        endpoint = urlsplit((request.query.get("authorization_endpoint") or [""])[0])
        host = self.fake.url.split("://", 1)[1]
        # msal names the instance without its port (https://127.0.0.1/{tenant}/oauth2/v2.0/authorize)
        if endpoint.hostname not in ("127.0.0.1", "localhost") or endpoint.port not in (None, self.fake.server.port):
            return self._oauth_error(400, "invalid_instance", 50049, "Unknown or invalid instance.")
        tenant = endpoint.path.strip("/").split("/", 1)[0]
        return json_response({
            "tenant_discovery_endpoint": f"{self.fake.url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })  # fmt: skip

    def keys(self) -> Response:
        return json_response({"keys": []})

    def device_authorization(self, tenant: str, request: Request) -> Response:
        form = _form(request)
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return self._oauth_error(400, "unauthorized_client", 700016, "Application not found in the directory.")
        flow = DeviceCode(
            device_code=secrets.token_urlsafe(32),
            user_code="".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9)),
            client_id=app.client_id,
            scopes=form.get("scope", "").split(),
            expires_at=time.time() + self.device_lifetime,
        )
        with self.lock:
            self.device_codes[flow.device_code] = flow
        uri = f"{self.fake.url}/devicelogin"
        return json_response({
            "user_code": flow.user_code,
            "device_code": flow.device_code,
            "verification_uri": uri,
            "expires_in": int(self.device_lifetime),
            "interval": self.device_interval,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code {flow.user_code} to authenticate.",
        })  # fmt: skip

    def token_endpoint(self, tenant: str, request: Request) -> Response:
        if not self.known_tenant(tenant):
            return self._oauth_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        form = _form(request)
        grant = form.get("grant_type", "")
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return self._oauth_error(400, "unauthorized_client", 700016,
                                     f"Application with identifier '{form.get('client_id')}' was not found in the directory.")  # fmt: skip
        if grant == "client_credentials":
            failure = self._authenticate_client(app, form, request)
            if failure is not None:
                return failure
            scopes = form.get("scope", "").split()
            if scopes != [f"{GRAPH_AUDIENCE}/.default"]:
                return self._oauth_error(400, "invalid_scope", 1002012,
                                         "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.")  # fmt: skip
            return self._issue(app, None, scopes, refresh=False)
        if grant == DEVICE_GRANT:
            return self._device_token(app, form)
        if grant == "refresh_token":
            with self.lock:
                entry = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if entry is None or entry[0] != app.client_id:
                return self._oauth_error(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired or is invalid.",
                )
            if not app.consented:
                return self._consent_required(app)
            return self._issue(app, entry[1], form.get("scope", "").split() or entry[2], refresh=True)
        return self._oauth_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
        )

    def _device_token(self, app: App, form: dict[str, str]) -> Response:
        if not app.public:
            return self._oauth_error(401, "invalid_client", 7000218,
                                     "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")  # fmt: skip
        with self.lock:
            flow = self.device_codes.get(form.get("device_code", ""))
            if flow is not None:
                flow.polls += 1
        if flow is None or flow.expires_at < time.time():
            return self._oauth_error(
                400,
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
            )
        if flow.declined:
            return self._oauth_error(
                400, "authorization_declined", 70019, "The end user denied the authorization request."
            )
        if flow.user_id is None:
            return self._oauth_error(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        if not app.consented:
            return self._consent_required(app)
        with self.lock:
            del self.device_codes[flow.device_code]
        return self._issue(app, flow.user_id, flow.scopes, refresh=True)

    def _authenticate_client(self, app: App, form: dict[str, str], request: Request) -> Response | None:
        if form.get("client_assertion_type") == JWT_BEARER and form.get("client_assertion"):
            problem = self._check_assertion(app, form["client_assertion"], request)
            if problem:
                return self._oauth_error(
                    401, "invalid_client", 700027, f"Client assertion failed signature validation. {problem}"
                )
            return None
        if app.secret is not None and form.get("client_secret") == app.secret:
            return None
        if form.get("client_secret"):
            return self._oauth_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            )
        return self._oauth_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )

    def _check_assertion(self, app: App, assertion: str, request: Request) -> str | None:
        """msal's certificate credential: a JWT signed with the app's private key (PS256 with
        x5t#S256, or RS256 with x5t), aud = the token endpoint, iss = sub = client id."""
        import jwt  # msal's own dependencies (the test extra), so the fake loads without them
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        if app.certificate_pem is None:
            return "The application has no certificate credential."
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            return f"Malformed assertion: {exc}"
        cert = x509.load_pem_x509_certificate(app.certificate_pem)
        der = cert.public_bytes(Encoding.DER)
        thumbprints = {("x5t#S256", b64url(hashlib.sha256(der).digest())), ("x5t", b64url(hashlib.sha1(der).digest()))}
        # base64url with or without padding (msal keeps it)
        if not any((name, str(header.get(name, "")).rstrip("=")) in thumbprints for name in ("x5t#S256", "x5t")):
            return "No key found matching the thumbprint in the assertion header."
        if header.get("alg") not in ("RS256", "PS256"):
            return f"Unsupported algorithm {header.get('alg')!r}."
        audiences = [f"{self.fake.url}{request.path}", f"{self.fake.url}/{self.tenant.id}/oauth2/v2.0/token"]
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=[header["alg"]], audience=audiences,  # type: ignore[arg-type]
                                issuer=app.client_id, options={"require": ["exp", "aud", "iss", "sub"]})  # fmt: skip
        except jwt.PyJWTError as exc:
            return str(exc)
        if claims.get("sub") != app.client_id:
            return "The 'sub' claim must be the client id."
        return None

    def _issue(self, app: App, user_id: str | None, scopes: list[str], *, refresh: bool) -> Response:
        now = time.time()
        claims: dict[str, Any] = {"aud": GRAPH_AUDIENCE, "iss": f"https://sts.windows.net/{self.tenant.id}/",
                                  "iat": int(now), "nbf": int(now), "exp": int(now + self.lifetime),
                                  "appid": app.client_id, "tid": self.tenant.id}  # fmt: skip
        if user_id:
            claims.update(
                {"oid": user_id, "scp": " ".join(s for s in scopes if s not in ("openid", "profile", "offline_access"))}
            )
        else:
            claims["roles"] = ["Mail.ReadWrite", "Contacts.ReadWrite", "Calendars.ReadWrite"] if app.consented else []
        token = unsigned_jwt(claims)
        with self.lock:
            if len(self.tokens) > 10_000:  # bounded: forget long-expired tokens
                for stale in [t for t, i in self.tokens.items() if i.expires_at < now - 3600]:
                    del self.tokens[stale]
            self.tokens[token] = TokenInfo(token, app.client_id, user_id, now + self.lifetime, scopes)
        body: dict[str, Any] = {"token_type": "Bearer", "scope": " ".join(scopes) or f"{GRAPH_AUDIENCE}/.default",
                                "expires_in": int(self.lifetime), "ext_expires_in": int(self.lifetime),
                                "access_token": token}  # fmt: skip
        if user_id and refresh:
            user = self.tenant.mailboxes[user_id]
            rt = secrets.token_urlsafe(48)
            with self.lock:
                self.refresh_tokens[rt] = (app.client_id, user_id, scopes)
            body["refresh_token"] = rt
            body["id_token"] = unsigned_jwt({
                "aud": app.client_id, "iss": f"{self.fake.url}/{self.tenant.id}/v2.0", "iat": int(now),
                "nbf": int(now), "exp": int(now + 3600), "name": user.display_name, "oid": user_id,
                "preferred_username": user.upn, "sub": b64url(hashlib.sha256(user_id.encode()).digest()),
                "tid": self.tenant.id, "ver": "2.0",
            })  # fmt: skip
            body["client_info"] = b64url(json.dumps({"uid": user_id, "utid": self.tenant.id}).encode())
        return json_response(body)

    def _consent_required(self, app: App) -> Response:
        resp = self._oauth_error(400, "invalid_grant", 65001,
                                 f"The user or administrator has not consented to use the application with ID '{app.client_id}'.")  # fmt: skip
        body = json.loads(resp.body)
        body["suberror"] = "consent_required"
        resp.body = json.dumps(body).encode()
        return resp

    def _oauth_error(self, status: int, error: str, code: int, text: str) -> Response:
        trace = str(uuid.uuid4())
        return json_response({
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {uuid.uuid4()} Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
            "error_uri": f"{self.fake.url}/error?code={code}",
        }, status)  # fmt: skip

    # -- the check on every Graph request -------------------------------------------------
    def check(self, request: Request) -> TokenInfo:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("Access token is empty.")
        with self.lock:
            info = self.tokens.get(token.strip())
        if info is None:
            raise _unauthenticated("IDX14100: JWT is not well formed, there are no dots (.).")
        if info.expires_at <= time.time():
            raise _unauthenticated("Lifetime validation failed, the token is expired.")
        app = self.apps[info.client_id]
        if not app.consented:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return info

    def may_open(self, info: TokenInfo, user_id: str, upn: str) -> None:
        if info.user_id is not None:
            if info.user_id != user_id:
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return
        allowed = self.apps[info.client_id].allowed_users
        if allowed is not None and user_id not in allowed and upn.lower() not in {a.lower() for a in allowed}:
            raise GraphError(403, "ErrorAccessDenied",
                             "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.")  # fmt: skip


def _unauthenticated(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, {
        "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
    })  # fmt: skip


def _form(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
