"""Flower ClientApp: two query handlers over fedgc's client side (fedgc.protocol.session.ClientSession).

    query.setup   the node reads its own CSV (node config `data-path`), builds its local model
                  (node config `model-path` = a given .npz, else identified from its data) and
                  answers name, state_dim, n_steps; in a private run it privatises its window here,
                  with its own noise and ledger, and adds its noise std, clip and signal-to-noise; when
                  the setup asks (SIV test) it adds its snapshot series.
    query.round   augmentation in, ClientReply out (payloads: fedgc.protocol.wire; records: clients.records).

Node config keys (flower-supernode --node-config "data-path='/data/feed.csv' client-name='feed'"):

    data-path          the client's CSV file (required)
    client-name        its name (default: the file stem)
    model-path         a given local model .npz (default: identify from the data)
    state-dim          D_m for identification (default: auto)
    explained-variance choose D_m by explained variance instead
    timestamp-column   auto | none | column name (default: auto)
    constant-columns, held-values, max-missing: the client's column policy (fedgc.app.config.ClientSpec)

A failed setup names the client (its client-name) in the error the server receives. The session is
kept per node between messages and rebuilt from the Flower context in a fresh process (clients.sessions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from clients.records import from_records, message_format_of, to_records
from clients.sessions import NodeSessions
from fedgc.app.clients import build_session
from fedgc.app.config import ClientOptions, ClientSpec
from fedgc.app.privacy import node_privacy
from fedgc.errors import ConfigError, FedGCError
from fedgc.protocol import wire
from fedgc.protocol.messages import ClientInfo
from fedgc.protocol.session import ClientSession

# ------------------------------------------------------------------------------- node settings
# Conversions node config <-> ClientSpec (to be replaced by fedgc.app.config's serialiser at merge).


def node_settings(
    node_config: Mapping[str, Any], overrides: Mapping[int, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """This node's client settings: its node config, or (simulation) the entry for its partition-id, validated
    and written out as a node config (fedgc.app.config.ClientSpec.from_node_config / to_node_config)."""
    cfg = dict(node_config)
    if overrides is not None:
        pid = cfg.get("partition-id")
        if pid is None or int(pid) not in overrides:
            raise ConfigError(f"simulated node with partition-id {pid!r} has no client assigned")
        cfg.update(overrides[int(pid)])
    if not cfg.get("data-path"):
        named = f" (client-name {cfg['client-name']!r})" if cfg.get("client-name") else ""
        raise ConfigError(
            f"this SuperNode{named} has no 'data-path' in its node config; start it with "
            "--node-config \"data-path='/path/to/client.csv' client-name='name'\""
        )
    keys = ClientSpec.NODE_CONFIG_KEYS.values()
    return ClientSpec.from_node_config({k: v for k, v in cfg.items() if k in keys and v != ""}).to_node_config()


def client_spec(settings: Mapping[str, Any]) -> ClientSpec:
    """The client these node settings describe (validated)."""
    return ClientSpec.from_node_config(settings)


def build(settings: Mapping[str, Any], setup: wire.SetupRequest, fallback_index: int = 0) -> ClientSession:
    """The node's ClientSession (fedgc.app.clients.build_session: reads only this node's file). In a private
    run the node builds its own mechanism from the setup's privacy settings and plan (fedgc.app.privacy.
    node_privacy): the local engine's refusals, noise from this node's entropy, its ledger beside its data
    file (which keeps the noise seed, so a session rebuilt in a fresh process redraws the same release)."""
    spec = client_spec(settings)
    options = ClientOptions(learn_theta=setup.learn_theta, theta=setup.theta)
    privacy = None
    if setup.plan is not None:
        index = setup.index_of(spec.name, fallback_index)
        privacy = node_privacy(setup.privacy, setup.plan, spec, index=index, seed=setup.seed, run=setup.run)
    return build_session(spec, options, seed=setup.seed_for(spec.name, fallback_index), privacy=privacy,
                         snapshots=setup.snapshots)  # fmt: skip


sessions = NodeSessions(build)


# ------------------------------------------------------------------------------- handlers


def handle_setup(message: Message, context: Context, overrides=None) -> Message:
    setup = wire.decode_setup(from_records(message.content))
    settings = node_settings(context.node_config, overrides)
    name = f"client {settings['client-name']!r}"
    try:
        session = sessions.start(context, settings, setup, int(context.node_config.get("partition-id", 0)))
    except Exception as exc:  # the server sees this text: it must say which client failed
        if name in str(exc):
            raise
        raise FedGCError(f"{name} could not set up: {type(exc).__name__}: {exc}") from exc
    info = ClientInfo(session.name, session.state_dim, session.n_steps, session.release, session.snapshot)
    reply = wire.encode_setup_reply(info, raw_bytes(session))
    return Message(to_records(reply, message_format=message_format_of(message.content)), reply_to=message)


def handle_round(message: Message, context: Context) -> Message:
    """Decode and validate the augmentation (fedgc.protocol.validation: shape (T, D_m), float64, finite, a new
    round); a bad one raises, which Flower returns to the server as this node's error reply."""
    augmentation, request, round_index = wire.decode_request(from_records(message.content))
    session = sessions.get(context)
    reply = session.round(augmentation, request, round_index)
    sessions.answered(context, session, round_index)
    return Message(
        to_records(wire.encode_reply(reply), message_format=message_format_of(message.content)), reply_to=message
    )


def raw_bytes(session: ClientSession) -> int:
    return int(session.n_steps * session.model.obs_dim * 8)


def make_client_app(overrides: Mapping[int, Mapping[str, Any]] | None = None) -> ClientApp:
    """The ClientApp. overrides: partition-id -> node settings (the simulation runtime, whose
    virtual nodes only carry partition-id in their node config)."""
    table = None if overrides is None else {int(k): dict(v) for k, v in overrides.items()}
    client_app = ClientApp()

    @client_app.query("setup")
    def _setup(message: Message, context: Context) -> Message:
        return handle_setup(message, context, table)

    @client_app.query("round")
    def _round(message: Message, context: Context) -> Message:
        return handle_round(message, context)

    return client_app


app = make_client_app()
