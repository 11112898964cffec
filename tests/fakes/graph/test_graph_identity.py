"""The fake's identity platform, driven by the real msal: client secret, certificate
assertion (PS256 and RS256), device code with polling, refresh, expiry, consent."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator

import httpx
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.fakes.graph.conftest import APP_ID, SECRET, UPN, app_token, shape, user_path, verify
from tests.servers.graph import GraphFake

SCOPE = ["https://graph.microsoft.com/.default"]


@pytest.fixture
def session(graph: GraphFake) -> Iterator[requests.Session]:
    with requests.Session() as s:
        assert graph.tls is not None
        s.verify = str(graph.tls.ca_file)  # msal's HTTP client trusts the test CA
        s.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides s.verify (requests#3829)
        yield s


def confidential(
    graph: GraphFake, session: requests.Session, credential: object, **kwargs: object
) -> msal.ConfidentialClientApplication:
    kwargs.setdefault("instance_discovery", False)
    return msal.ConfidentialClientApplication(APP_ID, client_credential=credential, authority=graph.authority,
                                              http_client=session, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def get(graph: GraphFake, token: str, path: str) -> httpx.Response:
    return httpx.get(
        f"{graph.url}/v1.0{path}", headers={"Authorization": f"Bearer {token}"}, verify=verify(graph), timeout=10
    )


def make_cert() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailfiler test app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256()))  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem.decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


def test_openid_metadata_has_what_msal_reads(graph: GraphFake) -> None:
    doc = httpx.get(
        f"{graph.url}/{graph.tenant.domain}/v2.0/.well-known/openid-configuration", verify=verify(graph)
    ).json()
    for key in ("token_endpoint", "authorization_endpoint", "device_authorization_endpoint", "issuer", "jwks_uri"):
        assert doc[key].startswith(graph.url)
    assert (
        httpx.get(
            f"{graph.url}/nowhere.example/v2.0/.well-known/openid-configuration", verify=verify(graph)
        ).status_code
        == 400
    )


def test_client_secret_through_msal(graph: GraphFake, session: requests.Session) -> None:
    result = confidential(graph, session, SECRET).acquire_token_for_client(scopes=SCOPE)
    assert "access_token" in result, result
    resp = get(graph, result["access_token"], f"/users/{UPN}/mailFolders")
    assert resp.status_code == 200
    assert {f["displayName"] for f in resp.json()["value"]} >= {"Inbox", "Sent Items"}
    bad = confidential(graph, session, "wrong").acquire_token_for_client(scopes=SCOPE)
    assert bad["error"] == "invalid_client" and 7000215 in bad["error_codes"]


def test_msal_authority_validation_through_instance_discovery(graph: GraphFake, session: requests.Session) -> None:
    app = confidential(graph, session, SECRET, instance_discovery=f"{graph.url}/common/discovery/instance")
    assert "access_token" in app.acquire_token_for_client(scopes=SCOPE)
    assert "GET discovery/instance" in graph.operations()


@pytest.mark.parametrize("with_thumbprint_only", [False, True], ids=["PS256-x5t#S256", "RS256-x5t"])
def test_certificate_assertion_is_checked(
    graph: GraphFake, session: requests.Session, with_thumbprint_only: bool
) -> None:
    key_pem, cert_pem = make_cert()
    graph.identity.apps[APP_ID].certificate_pem = cert_pem.encode()
    if with_thumbprint_only:
        sha1 = x509.load_pem_x509_certificate(cert_pem.encode()).fingerprint(hashes.SHA1()).hex()
        credential: dict[str, str] = {"private_key": key_pem, "thumbprint": sha1}
    else:
        credential = {"private_key": key_pem, "public_certificate": cert_pem}
    result = confidential(graph, session, credential).acquire_token_for_client(scopes=SCOPE)
    assert "access_token" in result, result
    assert get(graph, result["access_token"], f"/users/{UPN}").json()["userPrincipalName"] == UPN
    other_key, other_cert = make_cert()  # a key the app registration does not know
    result = confidential(
        graph, session, {"private_key": other_key, "public_certificate": other_cert}
    ).acquire_token_for_client(scopes=SCOPE)
    assert result["error"] == "invalid_client"


def test_device_code_flow_with_polling_then_silent_refresh(graph: GraphFake, session: requests.Session) -> None:
    graph.identity.device_interval = 1
    app = msal.PublicClientApplication(APP_ID, authority=graph.authority, http_client=session, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=["Mail.ReadWrite"])
    assert flow["user_code"] in flow["message"] and flow["verification_uri"].startswith(graph.url)

    def user_signs_in() -> None:
        while (
            graph.identity.device_codes.get(flow["device_code"], None) is not None
            and graph.identity.device_codes[flow["device_code"]].polls < 1
        ):
            time.sleep(0.05)
        graph.identity.approve(flow["user_code"], UPN)

    signer = threading.Thread(target=user_signs_in)
    signer.start()
    result = app.acquire_token_by_device_flow(flow)
    signer.join()
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == UPN
    assert get(graph, result["access_token"], "/me/mailFolders/inbox").json()["displayName"] == "Inbox"
    graph.identity.expire_tokens()
    assert get(graph, result["access_token"], "/me").status_code == 401
    (account,) = app.get_accounts()
    again = app.acquire_token_silent(["Mail.ReadWrite"], account=account, force_refresh=True)
    assert again is not None and "access_token" in again, again
    assert get(graph, again["access_token"], "/me").status_code == 200


def test_device_code_declined(graph: GraphFake, session: requests.Session) -> None:
    graph.identity.device_interval = 1
    app = msal.PublicClientApplication(APP_ID, authority=graph.authority, http_client=session, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=["Mail.ReadWrite"])
    graph.identity.decline(flow["user_code"])
    assert app.acquire_token_by_device_flow(flow)["error"] == "authorization_declined"


def test_expired_and_unknown_tokens_get_401_in_graph_shape(graph: GraphFake) -> None:
    graph.identity.lifetime = 1
    token = app_token(graph)
    assert get(graph, token, user_path(graph)).status_code == 200
    time.sleep(1.1)
    resp = get(graph, token, user_path(graph))
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    assert shape(resp.json()) == {
        "error": {
            "code": "str",
            "message": "str",
            "innerError": {"date": "str", "request-id": "str", "client-request-id": "str"},
        }
    }
    assert resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert get(graph, "garbage", user_path(graph)).json()["error"]["code"] == "InvalidAuthenticationToken"
    assert httpx.get(f"{graph.url}/v1.0{user_path(graph)}", verify=verify(graph)).status_code == 401


def test_revoked_consent(graph: GraphFake, session: requests.Session) -> None:
    token = app_token(graph)
    graph.identity.revoke_consent(APP_ID)
    resp = get(graph, token, user_path(graph))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    graph.identity.revoke_consent(APP_ID, invalidate_tokens=True)
    assert get(graph, token, user_path(graph)).status_code == 401
    graph.identity.grant_consent(APP_ID)
    assert get(graph, app_token(graph), user_path(graph)).status_code == 200


def test_revoked_consent_fails_a_delegated_refresh(graph: GraphFake, session: requests.Session) -> None:
    graph.identity.device_interval = 1
    app = msal.PublicClientApplication(APP_ID, authority=graph.authority, http_client=session, instance_discovery=False)
    flow = app.initiate_device_flow(scopes=["Mail.ReadWrite"])
    graph.identity.approve(flow["user_code"], UPN)
    assert "access_token" in app.acquire_token_by_device_flow(flow)
    graph.identity.revoke_consent(APP_ID)
    (account,) = app.get_accounts()
    result = app.acquire_token_silent_with_error(["Mail.ReadWrite"], account=account, force_refresh=True)
    assert result is not None and result["error"] == "invalid_grant" and 65001 in result["error_codes"]


def test_app_only_tokens_and_the_application_access_policy(graph: GraphFake) -> None:
    other = graph.add_user("megan@contoso.onmicrosoft.com")
    graph.identity.apps[APP_ID].allowed_users = {UPN}
    token = app_token(graph)
    assert get(graph, token, f"/users/{UPN}/mailFolders").status_code == 200
    denied = get(graph, token, f"/users/{other.upn}/mailFolders")
    assert denied.status_code == 403 and "AccessPolicy" in denied.json()["error"]["message"]
    me = get(graph, token, "/me/mailFolders")
    assert me.status_code == 400 and "delegated" in me.json()["error"]["message"]
    unknown = get(graph, token, "/users/nobody@contoso.onmicrosoft.com/mailFolders")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "ErrorInvalidUser"
    graph.mailbox(UPN).mailbox_enabled = False
    off = get(graph, token, f"/users/{UPN}/mailFolders")
    assert off.status_code == 404 and off.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"
