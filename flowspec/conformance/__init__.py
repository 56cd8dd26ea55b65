"""The conformance kit: check an implementation of Flow Matching against the spec."""

from .library import LIBRARIES, Row, check_library, installed_libraries

__all__ = ["LIBRARIES", "Row", "check_library", "installed_libraries"]
