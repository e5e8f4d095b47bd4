"""``tls_context``: the certificate and key files ``meshnode join --tls-cert --tls-key`` is given.

Every file that cannot serve HTTPS is refused at start with a ``ConfigError`` whose one line names
the flag, the file and what is wrong with it (real files, real OpenSSL; no agent needed).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from meshnode.errors import ConfigError
from meshnode.http.server import tls_context
from tests.integration.http.certs import Authority, ServerFiles


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ServerFiles:
    folder = tmp_path_factory.mktemp("tls-files")
    return Authority.create(folder).issue(folder, "node", ["127.0.0.1"])


def refused(cert: Path, key: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        tls_context(cert, key)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_certificate_and_its_key_make_a_server_context(files: ServerFiles) -> None:
    context = tls_context(files.cert, files.key)
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_no_files_mean_plain_http() -> None:
    assert tls_context(None, None) is None


def test_a_missing_or_unreadable_file_names_its_flag(files: ServerFiles, tmp_path: Path) -> None:
    assert refused(files.cert, tmp_path / "gone.key").startswith(f"--tls-key {tmp_path / 'gone.key'}: ")
    assert refused(tmp_path, files.key).startswith(f"--tls-cert {tmp_path}: cannot read it")


def test_files_that_hold_something_else_say_which_one(files: ServerFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM at all\n")
    assert refused(junk, files.key) == f"--tls-cert {junk} holds no PEM certificate"
    assert refused(files.cert, junk) == f"--tls-key {junk} holds no PEM private key"
    # The two files given the wrong way round.
    assert refused(files.key, files.cert).startswith(f"--tls-cert {files.key} holds no PEM certificate")


def test_a_key_of_another_certificate_is_refused(files: ServerFiles, tmp_path: Path) -> None:
    other = Authority.create(tmp_path).issue(tmp_path, "other", ["127.0.0.1"])
    message = refused(files.cert, other.key)
    assert (
        message
        == f"--tls-key {other.key} is not the private key of the certificate in --tls-cert {files.cert}"
    )


def test_a_passphrase_protected_key_is_refused_instead_of_prompting(
    files: ServerFiles, tmp_path: Path
) -> None:
    """OpenSSL would ask for the passphrase on the terminal, hanging an agent started by systemd."""
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert "is protected by a passphrase" in refused(files.cert, locked)
