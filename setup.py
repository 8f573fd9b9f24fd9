"""Build of the optional compiled kernel (everything else is in pyproject.toml).

``optional=True``: where no C compiler or Python headers exist the install still succeeds, and
flowscope runs the numpy path it has for every kernel (see ``decode/v5kernel.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "flowscope.decode._v5kernel",
            sources=["src/flowscope/decode/_v5kernel.c"],
            optional=True,
        )
    ]
)
