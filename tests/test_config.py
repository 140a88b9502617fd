import pytest

from sandbox import SandboxConfig
from sandbox.config import installed


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"workers": 0}, "workers"),
        ({"timeout": 0}, "timeout"),
        ({"memory_mb": 10}, "memory_mb"),
        ({"max_procs": 1}, "max_procs"),
        ({"disk_mb": 0}, "disk_mb"),
        ({"preload": ("numpy", "not a module")}, "preload"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        SandboxConfig(**settings)


def test_defaults_respect_the_documented_caps():
    config = SandboxConfig()
    assert config.memory_mb <= 4096 and config.disk_mb <= 1024 and config.max_procs <= 256
    assert config.effective_cpu_seconds == int(config.timeout)


def test_preload_accepts_a_comma_separated_string():
    assert SandboxConfig(preload="numpy, pandas").preload == ("numpy", "pandas")


def test_only_installed_preload_modules_are_kept():
    assert installed(("json", "surely_not_installed_pkg.sub")) == ("json",)
