"""fedgc's Flower ClientApp (clients.app:app), its records codec and its per-node sessions.

Not an installed package: it is part of the Flower app, loaded from the project folder (tests,
`python -m ...`, the images' /app) or from the run's FAB (Flower's own flwr-clientapp). It uses
Flower's public API only; fedgc's speed-ups for the SuperNode side are in flwr_internals/.
"""
