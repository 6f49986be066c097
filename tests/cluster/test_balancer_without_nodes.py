"""HAProxy with no node up answers 503 with a page of its own, not Triton's JSON: the shim reports that as
503 backend_unavailable (retry later), never as a 500 internal error."""

from __future__ import annotations

import pytest

from api_shim.gateway import TritonGateway
from lora_core.errors import BackendUnavailable
from testkit.haproxy_harness import HAProxy
from testkit.process_harness import free_port


@pytest.fixture(scope="module")
def balancer(tmp_path_factory):
    haproxy = HAProxy(tmp_path_factory.mktemp("haproxy"), [("node0", f"127.0.0.1:{free_port()}")])  # nobody there
    haproxy.start()
    yield haproxy
    haproxy.stop()


def test_a_load_with_no_node_up_is_backend_unavailable(balancer):
    gateway = TritonGateway(balancer.control_url, timeout_s=5, control_token="secret")
    with pytest.raises(BackendUnavailable, match="the balancer answered 503") as raised:
        gateway.control({"op": "load", "model_dir": "alpha"})
    assert raised.value.http_status == 503


def test_a_predict_with_no_node_up_is_backend_unavailable(balancer):
    gateway = TritonGateway(balancer.data_url, timeout_s=5, predict_retries=0)
    with pytest.raises(BackendUnavailable, match="the balancer answered 503"):
        gateway.predict([(["a text"], ["alpha"])])
