"""Build of the optional compiled kernels (everything else is in pyproject.toml).

``optional=True``: where no C compiler or Python headers exist the install still succeeds, and
flowscope runs the numpy path it has for every kernel (see ``decode/v5kernel.py`` and
``decode/walkkernel.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(name, sources=[f"src/{name.replace('.', '/')}.c"], optional=True)
        for name in ("flowscope.decode._v5kernel", "flowscope.decode._walkkernel")
    ]
)
