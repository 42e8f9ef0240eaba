"""Mutual TLS on the receiver: a client with a certificate from the hospital CA is served; a plain-TCP client and
a client with a foreign certificate fail the handshake, and both failures are logged and audited."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pynetdicom import AE
from svc_helpers import FakeReconstruct, free_port

from appliance.service.runtime import ApplianceService


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: str | None, ca: bool,
          folder: Path) -> tuple[ec.EllipticCurvePrivateKey, Path, Path]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_path, key_path = folder / f"{subject}.pem", folder / f"{subject}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key, cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key, ca_pem, _ = _cert("hospital-ca", None, None, True, tmp_path)
    _, box_pem, box_key = _cert("box", ca_key, "hospital-ca", False, tmp_path)
    _, scanner_pem, scanner_key = _cert("scanner", ca_key, "hospital-ca", False, tmp_path)
    rogue_key, _rogue_ca, _ = _cert("rogue-ca", None, None, True, tmp_path)
    _, rogue_pem, rogue_pem_key = _cert("rogue", rogue_key, "rogue-ca", False, tmp_path)
    return {"ca": ca_pem, "box": box_pem, "box_key": box_key, "scanner": scanner_pem,
            "scanner_key": scanner_key, "rogue": rogue_pem, "rogue_key": rogue_pem_key}  # fmt: skip


def _client_ctx(pki: dict[str, Path], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if cert:
        ctx.load_cert_chain(str(pki[cert]), str(pki[cert + "_key"]))
    return ctx


@pytest.mark.req("REQ-ACQ-302")
def test_mutual_tls(service_factory: Callable[..., ApplianceService], pki: dict[str, Path]) -> None:
    port = free_port()
    svc = service_factory(
        FakeReconstruct(),
        dicom={"port": port, "allowed": [{"ae_title": "SCANNER1", "host": "127.0.0.1"}],
               "tls": {"cert": str(pki["box"]), "key": str(pki["box_key"]), "ca": str(pki["ca"])}},
    )  # fmt: skip
    svc.start(importer=False)
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context("1.2.840.10008.1.1")
    good = ae.associate(
        "127.0.0.1", port, ae_title="EDGE3D", tls_args=(_client_ctx(pki, "scanner"), "localhost")
    )
    assert good.is_established
    assert good.send_c_echo().Status == 0
    good.release()
    # plain TCP speaking DICOM to a TLS port
    plain = ae.associate("127.0.0.1", port, ae_title="EDGE3D")
    assert not plain.is_established
    # a certificate from another CA
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with _client_ctx(pki, "rogue").wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"\x01")
                tls.recv(1)  # TLS 1.3 reports the rejected client certificate on first read
    deadline = time.monotonic() + 5
    while svc.receiver.tls_failures < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    failures = [r for r in svc.audit.records(action="association.rejected") if "TLS" in r.details["reason"]]
    assert len(failures) == 2 and all(r.requirement == "REQ-ACQ-302" for r in failures)
    assert len(svc.audit.records(action="association.accepted")) == 1


@pytest.mark.req("REQ-ACQ-302", "REQ-FUNC-312")
def test_export_over_mutual_tls(
    service_factory: Callable[..., ApplianceService], pki: dict[str, Path], shared_data: Path, tmp_path: Path
) -> None:
    """The export SCU speaks mutual TLS to a TLS node (here: a second appliance receiver)."""
    from svc_helpers import prepare_ct_series

    from appliance.config import PacsDestination, TlsConfig
    from appliance.service.errors import DicomExportError
    from appliance.service.export.scu import send_datasets

    port = free_port()
    pacs = service_factory(
        FakeReconstruct(),
        dicom={"port": port, "allowed": [{"ae_title": "SENDER", "host": "127.0.0.1"}],
               "tls": {"cert": str(pki["box"]), "key": str(pki["box_key"]), "ca": str(pki["ca"])}},
    )  # fmt: skip
    pacs.start(importer=False)
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=2)
    datasets = [pydicom.dcmread(f) for f in files]
    client = TlsConfig(cert=pki["scanner"], key=pki["scanner_key"], ca=pki["ca"])
    dest = PacsDestination(name="TLSPACS", ae_title="EDGE3D", host="127.0.0.1", port=port, tls=True)
    assert send_datasets(datasets, dest, "SENDER", client) == [0, 0]
    assert len(list((pacs.data_dir / "studies").rglob("*.dcm"))) == 2
    with pytest.raises(DicomExportError, match="needs TLS"):
        send_datasets(datasets, dest, "SENDER", None)
    plain = PacsDestination(name="PLAIN", ae_title="EDGE3D", host="127.0.0.1", port=port, tls=False)
    with pytest.raises(DicomExportError, match="refused or did not answer"):
        send_datasets(datasets, plain, "SENDER", None)
