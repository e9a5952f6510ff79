"""``python -m mmal``: the ``mmal`` command without its console script (e.g. from a source checkout)."""

from mmal.cli import app

if __name__ == "__main__":
    app()
