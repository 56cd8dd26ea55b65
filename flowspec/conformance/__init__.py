"""The conformance kit: check an implementation of Flow Matching against the spec.

Present the implementation through an adapter (:mod:`.adapter`), run
:func:`check` (or ``flowspec check TARGET``, or ``pytest --flowspec-target=...``) and
read the :class:`Report`. Importing this package imports neither Hypothesis nor any
array framework; they are imported when a check runs.
"""

from ..continuity import continuity_bound
from .adapter import (
    CAPABILITIES,
    CONVERSIONS,
    Adapter,
    LibraryAdapter,
    ReferenceAdapter,
    capabilities,
    load_target,
)
from .library import LIBRARIES, Row, check_library, installed_libraries
from .report import SCHEMA_VERSION, Report, Result, from_json, to_json
from .runner import check, property_ids

__all__ = [
    "CAPABILITIES",
    "CONVERSIONS",
    "LIBRARIES",
    "SCHEMA_VERSION",
    "Adapter",
    "LibraryAdapter",
    "ReferenceAdapter",
    "Report",
    "Result",
    "Row",
    "capabilities",
    "check",
    "check_library",
    "continuity_bound",
    "from_json",
    "installed_libraries",
    "load_target",
    "property_ids",
    "to_json",
]
