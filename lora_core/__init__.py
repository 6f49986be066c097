"""What the engine, the Triton model, the REST shim and the scripts share, with nothing heavier than the
standard library: the domain errors (`errors`), the settings machinery (`settings`, `etcd_settings`), the
control commands (`commands`) and the control secret (`control_token`). One module is the exception:
`prometheus` reads Triton's metrics with requests and prometheus_client, for the shim's status and the node
agent, never for the model. The cluster layer is the package lora_cluster (tests/test_layers.py)."""
