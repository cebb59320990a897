"""The HTTP API for users (``/api/v1``): conversations, history, read
positions, and the OpenAPI document that describes them.

A peer of :mod:`tornchat.ws`: both sit above the service and use it the same
way; neither knows the other. IOLoop thread only.
"""
