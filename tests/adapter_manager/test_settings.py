from dataclasses import dataclass
from pathlib import Path

import pytest

from adapter_manager.settings import Settings
from lora_core.settings import load_settings, setting
from lora_core.settings_registry import MODEL, Setting


def test_defaults_are_documented_and_used_when_nothing_is_set():
    settings = Settings.load(environ={})
    documented = {name: default for name, default, _ in Settings.documentation()}
    assert {"BASE_MODEL_DIR", "MODELS_ROOT", "STATE_DIR", "MAX_ADAPTERS", "DEVICE", "DTYPE"} <= set(documented)
    assert settings.base_model_dir == Path(documented["BASE_MODEL_DIR"])
    assert settings.max_adapters == int(documented["MAX_ADAPTERS"])
    assert (settings.device, settings.dtype) == ("auto", "auto")


def test_environment_overrides_parameters_which_override_defaults():
    parameters = {"MODELS_ROOT": "/from/params", "MAX_ADAPTERS": "7", "DTYPE": "float16"}
    environ = {"MODELS_ROOT": "/from/env", "DEVICE": "cpu"}
    settings = Settings.load(parameters, environ)
    assert settings.models_root == Path("/from/env")
    assert settings.max_adapters == 7
    assert (settings.device, settings.dtype) == ("cpu", "float16")


@pytest.mark.parametrize(
    "environ, field",
    [
        ({"MAX_ADAPTERS": "0"}, "MAX_ADAPTERS"),
        ({"MAX_ADAPTERS": "many"}, "MAX_ADAPTERS"),
        ({"DEVICE": "tpu"}, "DEVICE"),
        ({"DTYPE": "int8"}, "DTYPE"),
        ({"TORCH_THREADS": "-1"}, "TORCH_THREADS"),
        ({"MAX_TEXT_CHARS": "0"}, "MAX_TEXT_CHARS"),
        ({"MEMORY_TRIM_SECONDS": "-1"}, "MEMORY_TRIM_SECONDS"),
        ({"MODELS_INDEX_SECONDS": "0"}, "MODELS_INDEX_SECONDS"),
        ({"ETCD_TIMEOUT_S": "0"}, "ETCD_TIMEOUT_S"),
        ({"ETCD_ENDPOINTS": "http://e:2379", "ETCD_PREFIX": "lora"}, "ETCD_PREFIX"),
    ],
)
def test_invalid_values_name_the_setting(environ, field):
    with pytest.raises(ValueError, match=field):
        Settings.load(environ=environ)


TEST_REGISTRY = {
    "TEST_RATIO": Setting("TEST_RATIO", "number", "0.5", "", "a ratio", (MODEL,)),
    "TEST_WHERE": Setting("TEST_WHERE", "path", "/tmp", "", "a place", (MODEL,)),
    "TEST_NAMES": Setting("TEST_NAMES", "list", "a,b", "", "names", (MODEL,)),
}


@dataclass(frozen=True)
class _Typed:
    ratio: float = setting("TEST_RATIO")
    where: Path = setting("TEST_WHERE")


def test_settings_convert_on_the_real_type():
    loaded = load_settings(_Typed, environ={"TEST_RATIO": "2.5"}, registry=TEST_REGISTRY)
    assert loaded == _Typed(ratio=2.5, where=Path("/tmp"))
    with pytest.raises(ValueError, match="TEST_RATIO must be a number"):
        load_settings(_Typed, environ={"TEST_RATIO": "half"}, registry=TEST_REGISTRY)


@dataclass(frozen=True)
class _Unknown:
    names: list = setting("TEST_NAMES")


def test_a_setting_of_a_type_without_conversion_is_refused():
    with pytest.raises(TypeError, match="TEST_NAMES"):
        load_settings(_Unknown, environ={}, registry=TEST_REGISTRY)


def test_cuda_device_index_is_accepted():
    assert Settings.load(environ={"DEVICE": "cuda:1"}).device == "cuda:1"


def test_the_memory_trimmer_runs_in_the_background_and_can_be_turned_off():
    from adapter_manager.memory import start_memory_trimmer

    assert start_memory_trimmer(0) is None
    thread = start_memory_trimmer(0.01)
    assert thread is not None and thread.daemon and thread.is_alive()
