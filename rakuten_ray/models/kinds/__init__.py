"""One module per model kind, each registered with :func:`~rakuten_ray.models.registry.register`.

Every module here is imported when a config is read, so heavy libraries are imported inside
methods.
"""
