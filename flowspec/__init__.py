"""flowspec: the executable specification of Flow Matching.

Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling",
ICLR 2023 (arXiv:2210.02747). Every equation is one small pure function written
against the Python Array API standard: it runs unchanged on NumPy, array-api-strict,
PyTorch, JAX and CuPy arrays. Importing flowspec imports no array framework.
"""

from . import backends, couplings
from .continuity import continuity_residual
from .coupled_paths import CoupledPath
from .guidance import guided_field
from .likelihood import log_likelihood
from .losses import LossFloor, cfm_loss, cfm_loss_floor
from .marginal import EmpiricalMarginal
from .ode import euler, integrate
from .parameterisations import convert, convert_field
from .paths import GaussianPath
from .schedule_change import change_schedule, scale_time
from .schedules import (
    Coefficients,
    CondOT,
    Cosine,
    LinearVP,
    Polynomial,
    Schedule,
    VarianceExploding,
    VariancePreserving,
)

__version__ = "0.1.0"

__all__ = [
    "Coefficients",
    "CondOT",
    "Cosine",
    "CoupledPath",
    "EmpiricalMarginal",
    "GaussianPath",
    "LinearVP",
    "LossFloor",
    "Polynomial",
    "Schedule",
    "VarianceExploding",
    "VariancePreserving",
    "backends",
    "cfm_loss",
    "cfm_loss_floor",
    "change_schedule",
    "continuity_residual",
    "convert",
    "convert_field",
    "couplings",
    "euler",
    "guided_field",
    "integrate",
    "log_likelihood",
    "scale_time",
]
