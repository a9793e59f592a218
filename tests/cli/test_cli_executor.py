"""`secateurs run --executor ray --ray-address ...`: bad input fails at once with one clear line."""
import socket
import sys
import time

import pytest
import yaml

from secateurs.cli import main


def _recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": "torchvision.models:resnet18", "input_shape": [1, 3, 16, 16],
                                    "workdir": str(tmp_path / "run")}))
    return str(path)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv,message", [
    (["--ray-address", "127.0.0.1:6379"], "ray_address='127.0.0.1:6379' needs executor='ray'"),
    (["--executor", "ray", "--ray-address", "headnode"], "ray_address must be 'host:port'"),
    (["--executor", "spark"], "invalid choice: 'spark'"),
])
def test_bad_executor_flags(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", _recipe(tmp_path), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unreachable_ray_address_fails_fast(tmp_path, capsys):
    pytest.importorskip("ray")
    port = _free_port()
    started = time.perf_counter()
    with pytest.raises(SystemExit):
        main(["run", _recipe(tmp_path), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert time.perf_counter() - started < 15
    assert f"no Ray cluster reachable at '127.0.0.1:{port}'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ray_missing_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SystemExit):
        main(["run", _recipe(tmp_path), "--executor", "ray"])
    assert 'pip install "secateurs[ray]"' in capsys.readouterr().err
