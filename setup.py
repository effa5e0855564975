"""Build the optional compiled accelerator; everything else is in pyproject.toml.

Without a C compiler the build of tether._speedups fails quietly
(``optional=True``) and tether runs on its pure-Python paths.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tether._speedups",
            ["src/tether/_speedups.c", "src/tether/_speedups_ws.c"],
            depends=["src/tether/_speedups.h"],
            optional=True,
        )
    ]
)
