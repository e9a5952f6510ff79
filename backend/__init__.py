"""mmal engine: datasets, encoders and feature cache, fusion models, query strategies, diagnostics.

Nothing here imports a web server or a queue; the server, worker and benchmark are thin layers on top.
"""
