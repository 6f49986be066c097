"""What the engine, the Triton model, the REST shim and the scripts share, with nothing heavier than the
standard library: the domain errors (`errors`), the settings machinery (`settings`) and the control secret
(`control_token`). The shim's image copies this package whole, and no torch."""
