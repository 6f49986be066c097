"""The cluster layer, for several nodes: the etcd client (`etcd`), the node registry (`node_registry`), the node
agent (`node_agent`) and HAProxy's configuration (`haproxy_config`). It needs etcd3gw and requests beyond the
core. The shim and the model import it only when ETCD_ENDPOINTS is set (tests/test_layers.py)."""
