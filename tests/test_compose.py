"""docker-compose.yml (and the TLS overlay) against the code: services, programs, command lines, ports,
node configs, the data each ClientApp reads, what each image copies; README's plain-process commands;
the app's packaging (not installed; in the FAB). Parses the YAML; no Docker engine needed."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from flwr.common.config import parse_config_args
from flwr.supercore.cli.flower_superexec import _parse_args as superexec_parser
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

from clients.app import node_settings
from fedgc.app.config import load_config
from flwr_internals.runtime import _parser as runtime_parser
from server.deploy import (
    FLWR_VERSION,
    LAUNCHERS,
    STOCK,
    SUPERLINK_PORT,
    SUPERNODE_PORT,
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
    """The service's --node-config as Flower's SuperNode reads it."""
    return dict(parse_config_args([_arg(service["command"], "--node-config")]))


def test_services_one_supernode_and_runtime_per_client():
    expected = {"superlink", "superexec-serverapp"}
    expected |= {f"supernode-{i}" for i in range(N_CLIENTS)} | {f"clientapp-{i}" for i in range(N_CLIENTS)}
    assert set(SERVICES) == expected


def test_images_pinned_to_the_flower_version_in_use():
    import flwr

    assert flwr.__version__ == FLWR_VERSION
    app = SERVICES["superexec-serverapp"]["build"]["dockerfile_inline"]
    node = SERVICES["supernode-0"]["build"]["dockerfile_inline"]
    link = SERVICES["superlink"]["build"]["dockerfile_inline"]
    assert f"FROM flwr/superexec:{FLWR_VERSION}" in app
    assert f"FROM flwr/supernode:{FLWR_VERSION}" in node
    assert f"FROM flwr/superlink:{FLWR_VERSION}" in link
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in app and "torch==2.13.0" in deps


APP_PACKAGES = {"clients", "server", "flwr_internals"}  # the Flower app: not installed, loaded from the folder


def _local_imports(module: str) -> set[str]:
    """The repo's modules `module` imports, itself included, transitively (by parsing the source)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((ROOT / (name.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            todo += [
                n
                for n in names
                if n.split(".")[0] in APP_PACKAGES | {"fedgc"} and (ROOT / (n.replace(".", "/") + ".py")).is_file()
            ]
    return seen


def _copied(service) -> set[str]:
    """Modules (dotted, packages as NAME.__init__) the service's image copies; a copied folder as NAME.*."""
    copied = set()
    for line in service["build"]["dockerfile_inline"].splitlines():
        if line.strip().startswith("COPY"):
            for f in line.split()[2:-1]:
                copied.add(f[: -len(".py")].replace("/", ".") if f.endswith(".py") else f"{f.rstrip('/')}.*")
    return copied


def _module_of(entrypoint) -> str:
    assert entrypoint[:2] == ["python", "-m"], entrypoint
    return entrypoint[2]


@pytest.mark.parametrize("service, role", [("superlink", "superlink"), ("supernode-0", "supernode")])
def test_slim_images_copy_every_module_their_launcher_imports(service, role):
    """The SuperLink and SuperNode images add only fedgc's launcher to Flower's image: it must
    bring every repo module the launcher imports (and no fedgc/ or app code, which need numpy and torch)."""
    svc = SERVICES[service]
    assert svc["entrypoint"] == list(LAUNCHERS[role])
    module = _module_of(svc["entrypoint"])
    copied = _copied(svc)
    needed = _local_imports(module)
    packages = {m.rsplit(".", 1)[0] + ".__init__" for m in needed}
    assert needed | packages <= copied
    assert all(m.startswith("flwr_internals.") for m in needed), needed


def test_app_image_copies_the_app_and_runs_its_modules_from_app():
    """The fedgc-app image installs fedgc only (the library) and copies the Flower app's folders next to it,
    with /app on PYTHONPATH: `python -m flwr_internals.runtime`, `python -m server.deploy` and the
    flwr-serverapp processes the SuperExec starts find them whatever their working directory."""
    dockerfile = SERVICES["superexec-serverapp"]["build"]["dockerfile_inline"]
    assert "WORKDIR /app" in dockerfile and "ENV PYTHONPATH=/app" in dockerfile
    copied = _copied(SERVICES["superexec-serverapp"])
    for module in ("flwr_internals.runtime", "flwr_internals.superexec", "server.deploy", "server.app", "clients.app"):
        assert {f"{m.split('.')[0]}.*" for m in _local_imports(module)} <= copied, module
    for service in ("superlink", "supernode-0"):  # the slim images run their launcher the same way
        assert "ENV PYTHONPATH=/app" in SERVICES[service]["build"]["dockerfile_inline"]


@pytest.mark.parametrize("role", sorted(LAUNCHERS))
def test_every_launcher_is_a_module_of_the_internals_folder_and_takes_its_flower_programs_arguments(role):
    module = _module_of(list(LAUNCHERS[role]))
    assert module.startswith("flwr_internals.") and (ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert STOCK[role][0].startswith("flower-")


def test_superlink_and_serverapp_runtime_commands():
    link = SERVICES["superlink"]
    assert link["command"] == superlink_args("0.0.0.0", SUPERLINK_PORT)
    from flwr_internals.superlink import split_args

    _hold, flower_args = split_args(link["command"])
    assert flower_args == link["command"]  # no fedgc flag: the default hold; the rest is Flower's
    assert _parse_args_run_superlink().parse_args(flower_args).port == SUPERLINK_PORT
    assert f"{SUPERLINK_PORT}:{SUPERLINK_PORT}" in link["ports"]
    sx = SERVICES["superexec-serverapp"]
    assert sx["entrypoint"] == list(LAUNCHERS["superexec"])
    assert sx["command"] == superexec_args(LINK)
    assert superexec_parser().parse_args(sx["command"]).runtime_api_address == LINK  # flower-superexec's own parser


@pytest.mark.parametrize("i", range(N_CLIENTS))
def test_supernode_and_clientapp_agree(i):
    node, app = SERVICES[f"supernode-{i}"], SERVICES[f"clientapp-{i}"]
    nc = _node_config(node)
    assert node["entrypoint"] == list(LAUNCHERS["supernode"])
    assert node["command"] == supernode_args(LINK, nc, host="0.0.0.0", port=SUPERNODE_PORT)
    assert _parse_args_run_supernode().parse_args(node["command"]).superlink == LINK  # flower-supernode's own parser
    # the runtime talks to its own SuperNode's Runtime API, with the arguments flower-superexec would take
    assert app["entrypoint"] == list(LAUNCHERS["clientapp"])
    assert app["command"] == runtime_args(f"supernode-{i}:{SUPERNODE_PORT}")
    assert runtime_parser().parse_args(app["command"]).runtime_api_address == f"supernode-{i}:{SUPERNODE_PORT}"
    assert superexec_parser().parse_args(app["command"]).runtime_api_address == f"supernode-{i}:{SUPERNODE_PORT}"
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


CERTS = "/app/certificates"
CA = f"{CERTS}/ca.crt"
NODE_KEY = f"{CERTS}/supernode.key"


def _make_certs():
    """scripts/make_certs.py (not a package): where it writes each file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_certs", ROOT / "scripts" / "make_certs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _secrets(service) -> dict[str, str]:
    """container path -> host file of the service's secrets."""
    return {s["target"]: TLS["secrets"][s["source"]]["file"] for s in service.get("secrets", [])}


def _host(path: Path) -> str:
    return f"./{path.relative_to(ROOT).as_posix()}"


def test_tls_overlay_services():
    tls = TLS["services"]
    nodes = {f"supernode-{i}" for i in range(N_CLIENTS)}
    assert set(tls) == {"superlink", "superexec-serverapp", "register-supernodes"} | nodes
    assert set(tls) - {"register-supernodes"} <= set(SERVICES)  # the overlay only adds the registration job


def test_tls_superlink_and_serverapp_runtime():
    tls = TLS["services"]
    files = _make_certs().planned_files(ROOT / "deploy" / "certs", [f"client{i}" for i in range(N_CLIENTS)])
    link = tls["superlink"]
    paths = {"ca": CA, "cert": f"{CERTS}/server.pem", "key": f"{CERTS}/server.key"}
    assert link["command"] == superlink_args("0.0.0.0", SUPERLINK_PORT, tls=paths, supernode_auth=True)
    assert "--insecure" not in link["command"] and "--enable-supernode-auth" in link["command"]
    assert _secrets(link) == {
        CA: _host(files.ca),
        paths["cert"]: _host(files.server_cert),
        paths["key"]: _host(files.server_key),
    }
    sx = tls["superexec-serverapp"]
    assert sx["command"] == superexec_args(LINK, root_certificates=CA)
    assert _secrets(sx) == {CA: _host(files.ca)}
    # Flower 1.41's own parser accepts the SuperLink's command line
    parsed = _parse_args_run_superlink().parse_args(link["command"])
    assert parsed.enable_supernode_auth and not parsed.insecure and parsed.ssl_keyfile == paths["key"]


def test_tls_registration_job_registers_every_client_key():
    from server.deploy import _parser

    files = _make_certs().planned_files(ROOT / "deploy" / "certs", [f"client{i}" for i in range(N_CLIENTS)])
    job = TLS["services"]["register-supernodes"]
    assert job["image"] == SERVICES["superexec-serverapp"]["image"] and job["pull_policy"] == "never"
    assert job["entrypoint"] == ["python", "-m", "server.deploy", "register"]
    args = _parser().parse_args(["register", *job["command"]])
    assert args.superlink == LINK and args.root_certificates == CA and args.wait > 0
    mounted = _secrets(job)
    assert mounted.pop(CA) == _host(files.ca)
    # one public key per client, named after the client-name its SuperNode serves, from that client's .pub
    names = [_node_config(SERVICES[f"supernode-{i}"])["client-name"] for i in range(N_CLIENTS)]
    assert [p.stem for p in args.public_keys] == names
    assert {str(p): mounted[str(p)] for p in args.public_keys} == mounted
    for p in args.public_keys:
        assert mounted[str(p)] == _host(files.supernode_keys[p.stem][1])
    assert not any(f.endswith(".key") for f in mounted.values())  # the job never sees a private key


@pytest.mark.parametrize("i", range(N_CLIENTS))
def test_tls_supernode_uses_its_own_key(i):
    files = _make_certs().planned_files(ROOT / "deploy" / "certs", [f"client{j}" for j in range(N_CLIENTS)])
    svc = TLS["services"][f"supernode-{i}"]
    nc = _node_config(svc)
    assert nc == _node_config(SERVICES[f"supernode-{i}"])
    assert svc["command"] == supernode_args(
        LINK, nc, host="0.0.0.0", port=SUPERNODE_PORT, root_certificates=CA, auth_key=NODE_KEY
    )
    assert _secrets(svc) == {CA: _host(files.ca), NODE_KEY: _host(files.supernode_keys[nc["client-name"]][0])}
    assert svc["depends_on"]["register-supernodes"] == {"condition": "service_completed_successfully"}
    parsed = _parse_args_run_supernode().parse_args(svc["command"])
    assert parsed.auth_supernode_private_key == NODE_KEY and parsed.root_certificates == CA and not parsed.insecure


def test_tls_private_keys_reach_one_service_each():
    users: dict[str, list[str]] = {}
    for name, svc in TLS["services"].items():
        for host in _secrets(svc).values():
            users.setdefault(host, []).append(name)
    for host, services in users.items():
        if host.endswith(".key"):
            assert len(services) == 1, (host, services)
    assert users["./deploy/certs/server.key"] == ["superlink"]
    assert all(spec["file"].startswith("./deploy/certs/") for spec in TLS["secrets"].values())
    assert "deploy/certs/" in (ROOT / ".gitignore").read_text().split()


def test_pyproject_names_the_apps():
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "server.app:app", "clientapp": "clients.app:app"}
    from server.app import DEFAULTS

    assert set(app["config"]) == set(DEFAULTS)


# ------------------------------------------------------------------ README and the app's packaging

OLD_PATHS = ("clients.runtime", "clients.supernode", "server.superlink", "clients/runtime.py", "clients/supernode.py",
             "server/superlink.py", "clients.heldpoll", "clients/heldpoll.py", "clients.flwrtiming")  # fmt: skip


def test_documented_plain_process_commands_use_the_layouts_programs():
    """docs/deployment.md shows every launcher's command line (`python -m MODULE` of server.deploy.LAUNCHERS);
    every `python -m MODULE` there and in the README is a module of the project, and no text names a module
    path the layout no longer has."""
    docs = {name: (ROOT / name).read_text() for name in ("README.md", "docs/deployment.md")}
    launchers = {_module_of(list(argv)) for argv in LAUNCHERS.values()}
    for name, text in docs.items():
        commands = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S))
        modules = set(re.findall(r"python -m ([\w.]+)", commands))
        if name == "docs/deployment.md":
            assert launchers <= modules, f"{name} should show every launcher's command line"
        for module in modules:
            assert module in launchers | {"pytest", "server.deploy"}, (name, module)
            assert module == "pytest" or (ROOT / (module.replace(".", "/") + ".py")).is_file(), (name, module)
    for text in (
        *docs.values(),
        (ROOT / "docker-compose.yml").read_text(),
        (ROOT / "docker-compose.tls.yml").read_text(),
    ):
        assert not [old for old in OLD_PATHS if old in text]


def test_the_flower_app_is_not_installed_into_site_packages():
    """Only fedgc is a package of the distribution; clients/, server/, flwr_internals/ come from the project folder."""
    from importlib import metadata, util

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["fedgc*"]
    assert "." in pyproject["tool"]["pytest"]["ini_options"]["pythonpath"]
    dist = metadata.distribution("fedgc")
    top = (dist.read_text("top_level.txt") or "").split()
    assert not set(top) & APP_PACKAGES
    for package in APP_PACKAGES:
        assert Path(util.find_spec(package).origin).resolve().parent.parent == ROOT


def _fab_files() -> set[str]:
    import io
    import zipfile

    from server.engine import build_fab

    fab_bytes, _ = build_fab()
    return set(zipfile.ZipFile(io.BytesIO(fab_bytes)).namelist())


def test_fab_holds_every_module_the_apps_import():
    """The FAB (what flwr-serverapp and flwr-clientapp load) carries every app module the ServerApp and the
    ClientApp import, the opt-in Flower internals of the ServerApp, and pyproject.toml naming both apps."""
    files = _fab_files()
    needed = _local_imports("server.app") | _local_imports("clients.app") | _local_imports("flwr_internals.timing")
    needed = {m for m in needed if m.split(".")[0] in APP_PACKAGES}
    for module in needed | {m.rsplit(".", 1)[0] + ".__init__" for m in needed}:
        assert module.replace(".", "/") + ".py" in files, module
    assert "pyproject.toml" in files and not any(f.startswith(("fedgc/", "tests/", ".venv/")) for f in files)
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert all(any(f.startswith(p.split("/")[0] + "/") for f in files) for p in app["fab-include"])
