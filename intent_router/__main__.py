"""``python -m intent_router``: the same CLI as ``intent-router``."""

from .cli import app

app(prog_name="intent-router")
