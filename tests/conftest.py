"""Shared fixtures: `xp` over every array library, `schedule` and `discrete_schedule` over
the catalogues of schedules under contract; Hypothesis profiles.

Profiles: "ci" (derandomized, bounded examples; the default when CI is set) and
"deep" (many examples, random seeds) for local runs: `HYPOTHESIS_PROFILE=deep pytest`.
"""

from __future__ import annotations

import os

import pytest
from helpers import LIBRARIES, namespace_of
from hypothesis import HealthCheck, settings

from flowspec.discrete.schedules import CATALOGUE as DISCRETE_CATALOGUE
from flowspec.schedules import CATALOGUE

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "deep",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session", params=LIBRARIES, ids=LIBRARIES)
def xp(request):
    """The Array API namespace of numpy, array-api-strict, torch, JAX (x64 on)."""
    return namespace_of(request.param)


@pytest.fixture(scope="session", params=CATALOGUE, ids=repr)
def schedule(request):
    """Each schedule under contract (flowspec.schedules.CATALOGUE)."""
    return request.param


@pytest.fixture(scope="session", params=DISCRETE_CATALOGUE, ids=repr)
def discrete_schedule(request):
    """Each kappa schedule under contract (flowspec.discrete.schedules.CATALOGUE)."""
    return request.param
