"""The contract suite lives in a helper module; let pytest rewrite its asserts."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.contract.source_contract")
