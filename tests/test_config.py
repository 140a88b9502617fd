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


def test_the_zygote_gets_the_documented_default_limits_in_bytes():
    # sandbox/README.md: 4 GiB address space, 1 GiB disk, 256 processes; the --timeout help: CPU seconds
    # default to the wall-clock timeout (10 s)
    assert SandboxConfig().limits() == {
        "cpu_seconds": 10,
        "memory_bytes": 4 * 1024**3,
        "disk_bytes": 1024**3,
        "max_procs": 256,
    }


@pytest.mark.parametrize(
    "settings, cpu_seconds",
    [
        ({"timeout": 2.4}, 2),  # unset: the wall-clock timeout, rounded
        ({"timeout": 2.6}, 3),
        ({"timeout": 0.2}, 1),  # never below one second (RLIMIT_CPU 0 would kill at once)
        ({"timeout": 30, "cpu_seconds": 3.7}, 4),  # set: wins over the timeout
    ],
)
def test_cpu_seconds_follow_the_timeout_unless_set(settings, cpu_seconds):
    assert SandboxConfig(**settings).limits()["cpu_seconds"] == cpu_seconds


def test_preload_accepts_a_comma_separated_string():
    assert SandboxConfig(preload="numpy, pandas").preload == ("numpy", "pandas")


def test_only_installed_preload_modules_are_kept():
    assert installed(("json", "surely_not_installed_pkg.sub")) == ("json",)
