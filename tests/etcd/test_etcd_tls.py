"""etcd over TLS, as production runs it: https members that ask each client for a certificate. The desired
state goes through both of the client's paths (etcd3gw's, and the kept-alive one of the check made for every
batch); a client missing the CA or its certificate cannot reach etcd; the settings are checked."""

from __future__ import annotations

import time

import pytest

from adapter_manager.etcd_state import EtcdDesiredState
from adapter_manager.manifest import ManifestEntry
from lora_core.errors import BackendUnavailable
from lora_cluster.etcd import EtcdCluster, TlsFiles, b64
from lora_core.etcd_settings import EtcdSettings
from lora_core.settings import load_settings
from testkit.etcd_harness import EtcdMembers
from testkit.tls import make_certificates


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    certificates = make_certificates(tmp_path_factory.mktemp("certificates"))
    with EtcdMembers(tmp_path_factory.mktemp("etcd-tls"), count=1, tls=certificates) as members:
        yield members, certificates


def test_the_desired_state_goes_over_tls_with_a_client_certificate(tls_etcd):
    members, certificates = tls_etcd
    settings = load_settings(
        EtcdSettings,
        environ={
            "ETCD_ENDPOINTS": members.endpoints[0],
            "ETCD_CA_CERT": str(certificates.ca_cert),
            "ETCD_CERT": str(certificates.client_cert),
            "ETCD_KEY": str(certificates.client_key),
        },
    )
    settings.check_etcd()
    cluster = settings.etcd_cluster()
    assert cluster is not None and cluster.endpoints[0].startswith("https://")
    store = EtcdDesiredState(cluster, "/tls-test/")
    entry = ManifestEntry(model_id="a", max_length=64, version=1, loaded_at=time.time())
    assert store.compare_and_set(0, {"a": entry})
    state = store.read()
    assert sorted(state.entries) == ["a"]
    assert store.signature() == state.generation  # the kept-alive path, over TLS too


@pytest.mark.parametrize("missing", ["the CA", "the client certificate"])
def test_a_client_without_the_ca_or_its_certificate_cannot_reach_etcd(tls_etcd, missing):
    members, certificates = tls_etcd
    if missing == "the CA":
        tls = TlsFiles(cert=str(certificates.client_cert), key=str(certificates.client_key))
    else:
        tls = TlsFiles(ca_cert=str(certificates.ca_cert))
    cluster = EtcdCluster(members.endpoints, None, timeout_s=2, budget_s=0, tls=tls)
    for quick in (False, True):
        with pytest.raises(BackendUnavailable, match="etcd is unreachable"):
            cluster.post("kv/range", {"key": b64("/tls-test/desired")}, quick=quick)


def test_tls_settings_are_checked(tmp_path):
    pem = tmp_path / "client.pem"
    pem.write_text("not checked here")
    with pytest.raises(ValueError, match="ETCD_CERT and ETCD_KEY go together"):
        load_settings(EtcdSettings, environ={"ETCD_CERT": str(pem)}).check_etcd()
    with pytest.raises(ValueError, match="ETCD_CA_CERT names no file"):
        load_settings(EtcdSettings, environ={"ETCD_CA_CERT": str(tmp_path / "missing.pem")}).check_etcd()
