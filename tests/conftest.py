"""The suite's plugins; the fixtures and helpers themselves live in tests/helpers/.

tests/ has no __init__.py, so pytest's default "prepend" import mode puts it on
sys.path and `helpers` imports as a top-level package. Test modules import from it,
never from another test module or from this file.
"""

import pytest

# Plain `assert`s in the helpers report their values, as they do in the tests.
pytest.register_assert_rewrite("helpers")

pytest_plugins = ["helpers.database", "helpers.citus"]
