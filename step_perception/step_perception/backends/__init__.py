"""Model backends: each implements ``step_perception.core.backend.Backend`` and imports only core.

``__all__`` names the public modules; none is imported here (the openai SDK and
torch load only when that backend is built). Build one with
``factory.make_backend(kind, ...)`` or ``factory.backend_from_config(config)``.
"""

__all__ = ["cassette", "factory", "openai", "transformers_backend"]
