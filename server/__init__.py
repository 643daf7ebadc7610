"""fedgc's Flower ServerApp (server.app:app), its transport, the Flower engines and the deployment.

Not an installed package: it is part of the Flower app, loaded from the project folder
(fedgc.app.runner looks the engines up in server/engine.py by name, with the project folder on
sys.path; tests; `python -m server.deploy`) or from the run's FAB (flwr-serverapp). The ServerApp
uses Flower's public API only (fedgc's faster object pulls are opt-in: run config
`fast-object-pulls`); what needs Flower's private modules is in flwr_internals/.
"""
