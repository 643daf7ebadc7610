"""docker-compose.yml (and the TLS overlay) against the code: services, command lines, ports,
node configs and the data each ClientApp reads. Parses the YAML; no Docker engine needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import yaml

from clients.app import node_settings
from clients.runtime import _parser as runtime_parser
from fedgc.config import load_config
from server.deploy import (
    FLWR_VERSION,
    SUPERLINK_PORT,
    SUPERNODE_PORT,
    parse_node_config,
    runtime_args,
    superexec_args,
    superlink_args,
    supernode_args,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
TLS = yaml.safe_load((ROOT / "docker-compose.tls.yml").read_text())
SERVICES = COMPOSE["services"]
N_CLIENTS = load_config(ROOT / "simulations" / "default.yaml").synthetic.n_clients
LINK = f"superlink:{SUPERLINK_PORT}"


def _arg(command, flag):
    return command[command.index(flag) + 1]


def _node_config(service) -> dict:
    return parse_node_config(_arg(service["command"], "--node-config"))


def test_services_one_supernode_and_runtime_per_client():
    expected = {"superlink", "superexec-serverapp"}
    expected |= {f"supernode-{i}" for i in range(N_CLIENTS)} | {f"clientapp-{i}" for i in range(N_CLIENTS)}
    assert set(SERVICES) == expected


def test_images_pinned_to_the_flower_version_in_use():
    import flwr

    assert flwr.__version__ == FLWR_VERSION
    assert SERVICES["superlink"]["image"] == f"flwr/superlink:{FLWR_VERSION}"
    app = SERVICES["superexec-serverapp"]["build"]["dockerfile_inline"]
    node = SERVICES["supernode-0"]["build"]["dockerfile_inline"]
    assert f"FROM flwr/superexec:{FLWR_VERSION}" in app
    assert f"FROM flwr/supernode:{FLWR_VERSION}" in node
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in app and "torch==2.13.0" in deps


def test_superlink_and_serverapp_runtime_commands():
    link = SERVICES["superlink"]
    assert link["command"] == superlink_args("0.0.0.0", SUPERLINK_PORT)
    assert f"{SUPERLINK_PORT}:{SUPERLINK_PORT}" in link["ports"]
    sx = SERVICES["superexec-serverapp"]
    assert sx["entrypoint"] == ["flower-superexec"]
    assert sx["command"] == superexec_args(LINK)


@pytest.mark.parametrize("i", range(N_CLIENTS))
def test_supernode_and_clientapp_agree(i):
    node, app = SERVICES[f"supernode-{i}"], SERVICES[f"clientapp-{i}"]
    nc = _node_config(node)
    assert node["entrypoint"] == ["python", "-m", "clients.supernode"]
    assert node["command"] == supernode_args(LINK, nc, host="0.0.0.0", port=SUPERNODE_PORT)
    # the runtime talks to its own SuperNode's Runtime API
    assert app["entrypoint"] == ["python", "-m", "clients.runtime"]
    assert app["command"] == runtime_args(f"supernode-{i}:{SUPERNODE_PORT}")
    assert runtime_parser().parse_args(app["command"]).runtime_api_address == f"supernode-{i}:{SUPERNODE_PORT}"
    # what the ClientApp reads (its node config) is mounted, read-only, into the ClientApp's container only
    settings = node_settings(nc)
    assert settings["client-name"] == f"client{i}"
    mounts = {}
    for v in app["volumes"]:
        host, container, mode = v.split(":")
        mounts[container] = (host, mode)
    for key in ("data-path", "model-path"):
        host, mode = mounts[settings[key]]
        assert mode == "ro"
        assert Path(host).name == Path(settings[key]).name
        assert host.startswith("./deploy/data/")
    assert "volumes" not in node  # the SuperNode never sees the data
    # every client has its own file
    others = [SERVICES[f"clientapp-{j}"]["volumes"] for j in range(N_CLIENTS) if j != i]
    assert not any(set(app["volumes"]) & set(v) for v in others)


def test_node_configs_match_prepare_and_the_run_config(tmp_path):
    from server.deploy import prepare

    nodes = prepare(ROOT / "simulations" / "default.yaml", tmp_path, container_dir="/data")
    for i in range(N_CLIENTS):
        assert _node_config(SERVICES[f"supernode-{i}"]) == nodes[f"client{i}"]
    run = load_config(tmp_path / "run.yaml")
    assert [c.name for c in run.clients] == [f"client{i}" for i in range(N_CLIENTS)]
    assert all(Path(c.data).is_file() and Path(c.model).is_file() for c in run.clients)


def test_tls_overlay():
    tls = TLS["services"]
    assert set(tls) == {"superlink", "superexec-serverapp"} | {f"supernode-{i}" for i in range(N_CLIENTS)}
    link = tls["superlink"]["command"]
    assert "--insecure" not in link and any(a.startswith("--ssl-certfile=") for a in link)
    targets = {s["target"] for s in tls["superlink"]["secrets"]}
    for flag in ("--ssl-ca-certfile=", "--ssl-certfile=", "--ssl-keyfile="):
        assert next(a for a in link if a.startswith(flag)).split("=", 1)[1] in targets
    ca = "/app/certificates/ca.crt"
    assert tls["superexec-serverapp"]["command"] == superexec_args(LINK, root_certificates=ca)
    for i in range(N_CLIENTS):
        svc = tls[f"supernode-{i}"]
        nc = _node_config(svc)
        assert nc == _node_config(SERVICES[f"supernode-{i}"])
        assert svc["command"] == supernode_args(LINK, nc, host="0.0.0.0", port=SUPERNODE_PORT, root_certificates=ca)
        assert {s["target"] for s in svc["secrets"]} == {ca}
    for name, spec in TLS["secrets"].items():
        assert spec["file"].startswith("./deploy/certs/")


def test_pyproject_names_the_apps():
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "server.app:app", "clientapp": "clients.app:app"}
    from server.app import DEFAULTS

    assert set(app["config"]) == set(DEFAULTS)
